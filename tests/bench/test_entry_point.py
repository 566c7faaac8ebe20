"""``python -m bench``: the listing, running one benchmark by name, unknown names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as entry

REPO = Path(__file__).resolve().parents[2]


def test_listing_names_every_registered_benchmark():
    listed = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout

    for benchmark in entry.REGISTRY:
        assert benchmark.name in listed
        __import__(benchmark.module)  # every registered module exists


def test_runs_a_benchmark_by_name_with_its_arguments(tmp_path, capsys):
    assert entry.main(["placement", "--cases", "3", "--out", str(tmp_path)]) == 0

    assert "pointillist (measured)" in capsys.readouterr().out
    assert json.loads((tmp_path / "placement.json").read_text())["settings"]["cases"] == 3


def test_unknown_name_lists_the_choices():
    with pytest.raises(SystemExit, match="fp8-memory"):
        entry.main(["no-such-benchmark"])


def test_all_skips_what_cannot_run_here_unless_quick():
    quality = entry.find("quality")

    assert entry.skip_reason(quality, quick=False) is not None
    assert entry.skip_reason(quality, quick=True) is None
