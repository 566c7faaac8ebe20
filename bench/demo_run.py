"""The command line shared by the benchmarks that time one demo request many times, side by side
(server overhead, tracing overhead, cache hits): ``--runs``, ``--steps``, ``--size``, ``--out``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import record

DemoRun = Callable[[int, int, int, Path], Any]
"""``run(runs, steps, size, out)``: interleaved runs of one demo request, then the record."""


def demo_run_main(
    run: DemoRun, description: str | None, argv: list[str] | None, runs: int = 20
) -> None:
    """Parse the shared arguments (``runs`` is the default count) and call ``run``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.runs, args.steps, args.size, args.out)
