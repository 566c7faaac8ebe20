"""The client package imports without the server's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "optimum", "server", "scheduler", "engine")


def test_client_and_cli_import_without_server_dependencies() -> None:
    script = (
        "import sys, pointillist, pointillist.cli; "
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert completed.stdout.strip() == ""


def test_public_api() -> None:
    import pointillist

    for name in pointillist.__all__:
        assert hasattr(pointillist, name), name


def test_request_building_is_still_importable_from_conversion() -> None:
    # Split out of pointillist.conversion; code that imported it from there keeps working.
    from pointillist import conversion, request_building

    for name in request_building.__all__:
        assert getattr(conversion, name) is getattr(request_building, name), name
