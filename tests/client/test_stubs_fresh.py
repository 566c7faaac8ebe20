"""The committed stubs in clients/python/pointillist/v1 match a fresh protoc run on proto/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "clients" / "python" / "scripts" / "generate_stubs.py"
COMMITTED = REPO_ROOT / "clients" / "python" / "pointillist" / "v1"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_stubs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_stubs_are_byte_identical_to_fresh_ones(tmp_path: Path) -> None:
    _load_script().generate(tmp_path)

    fresh = _files(tmp_path / "pointillist" / "v1")
    committed = _files(COMMITTED)

    assert fresh, "protoc generated nothing"
    hint = "stubs are stale: run python clients/python/scripts/generate_stubs.py"
    assert sorted(committed) == sorted(fresh), hint
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{hint} (differ: {', '.join(stale)})"
