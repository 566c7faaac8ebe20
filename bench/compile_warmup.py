"""Compiled replicas: how long a demo replica takes to report ready, uncompiled, compiled on a
cold compile cache, and compiled again on the warm cache (a restart), side by side.

    python -m bench compile-warmup [--restarts 2] [--size 256]

Each start is a fresh server and worker process (``server.background.ServerThread``) serving the
demo model on the CPU; "ready" is the time from the server's start to the replica's WorkerReady,
model loading and the whole warm-up included. The cold start gets an empty inductor cache of its
own (a temporary folder), the restarts reuse it: what ``[scheduler] compile_cache_dir`` buys.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import record
from engine.config import demo_model_config
from scheduler.fleet_settings import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings


def ready_s(compile: bool, size: int, cache_dir: str) -> float:
    config = dataclasses.replace(
        demo_model_config(), device="cpu", compile=compile, compile_sizes=((size, size),)
    )
    settings = ServerSettings(
        address="127.0.0.1:0",
        models=(config,),
        inventory="cpu",
        result_cache="off",
        scheduler=FleetSettings(compile_cache_dir=cache_dir),
    )
    started = time.perf_counter()
    server = ServerThread(settings).start()
    elapsed = time.perf_counter() - started
    server.stop()
    return elapsed


def run(restarts: int, size: int, out: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pointillist-inductor-") as cache_dir:
        eager = ready_s(False, size, cache_dir)
        cold = ready_s(True, size, cache_dir)
        warm = [ready_s(True, size, cache_dir) for _ in range(restarts)]
    warm_median = record.median(warm)
    results = {
        "uncompiled_ready_s": eager,
        "compiled_cold_cache_ready_s": cold,
        "compiled_warm_cache_ready_s": warm,
        "compiled_warm_cache_ready_median_s": warm_median,
        "ratio_cold_over_warm": cold / warm_median,
    }
    path = record.write("compile-warmup", {"restarts": restarts, "size": size}, results, out)
    rows = [
        ("replica", "ready s"),
        ("uncompiled", f"{eager:.1f}"),
        ("compiled, cold compile cache", f"{cold:.1f}"),
        (f"compiled, warm cache (median of {restarts})", f"{warm_median:.1f}"),
        ("cold / warm", f"{cold / warm_median:.1f}x"),
    ]
    print(record.table(rows))
    print(f"record: {path}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=2, help="warm-cache starts (median)")
    parser.add_argument("--size", type=int, default=256, help="the one compiled size")
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.restarts, args.size, args.out)


if __name__ == "__main__":
    main()
