"""Regenerate the Python stubs in clients/python/pointillist/v1 from proto/.

Run from anywhere: ``python clients/python/scripts/generate_stubs.py``. The generated files are
committed so the client installs without grpcio-tools; tests/client/test_stubs_fresh.py fails
when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
OUTPUT_ROOT = REPO_ROOT / "clients" / "python"


def proto_files() -> list[Path]:
    """Every .proto of the API, sorted for a stable generation order."""
    return sorted((PROTO_ROOT / "pointillist" / "v1").glob("*.proto"))


def generate(output_root: Path = OUTPUT_ROOT) -> None:
    """Run protoc (from grpcio-tools) for messages, type stubs and gRPC services.

    Imports resolve against proto/, protobuf's well-known types (shipped with grpcio-tools) and
    the google.rpc types (``google/rpc/status.proto``, shipped with googleapis-common-protos,
    which grpcio-status depends on; the generated code imports their ``_pb2`` modules from it).
    """
    import google.rpc.status_pb2
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.status_pb2.__file__).parents[2]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"-I{googleapis}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *[str(path.relative_to(PROTO_ROOT)) for path in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_init = output_root / "pointillist" / "v1" / "__init__.py"
    if not package_init.exists():
        package_init.write_text('"""Generated protobuf and gRPC stubs for pointillist.v1."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT_ROOT)
