"""The server and scheduler never import torch: the engine runs only in worker processes."""

from __future__ import annotations

import subprocess
import sys


def test_server_and_scheduler_import_without_torch():
    probe = (
        "import sys, server.app, server.cli, server.plan_cli, scheduler.fleet, pointillist.cli;"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules);"
        "print(','.join(heavy))"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == ""
