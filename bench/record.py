"""The JSON record every benchmark writes: machine, versions, settings, raw samples, medians."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

DEFAULT_OUT = Path("out/bench")
PACKAGES = ("torch", "diffusers", "transformers", "optimum-quanto", "grpcio", "pointillist")


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def write(name: str, settings: dict[str, Any], results: dict[str, Any], out: Path) -> Path:
    """Write ``out/<name>.json`` and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def table(rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned text table; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
