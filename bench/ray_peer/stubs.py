"""Compiles demo_service.proto into Python stubs with grpcio-tools (the project's dev tools).

The stubs go to a folder put on the PYTHONPATH of the Ray processes and imported by the load
generator's caller; they are generated, so they are written under out/, never committed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("demo_service.proto")
MODULE = "demo_service_pb2"
SERVICER_FUNCTION = "demo_service_pb2_grpc.add_DemoServiceServicer_to_server"


def compile_stubs(dest: Path) -> Path:
    """Writes demo_service_pb2.py and demo_service_pb2_grpc.py into ``dest``; returns it."""
    from grpc_tools import protoc

    dest.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO.parent}",
            f"--python_out={dest}",
            f"--grpc_python_out={dest}",
            str(PROTO),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) on {PROTO}")
    return dest


def import_stubs(folder: Path) -> tuple[ModuleType, ModuleType]:
    """(messages, grpc) modules from ``folder``; the grpc module imports the messages by name."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    modules = []
    for name in (MODULE, f"{MODULE}_grpc"):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]
