"""One entry point for every benchmark.

    python -m bench                       # list them
    python -m bench fp8-memory [ARGS...]  # run one; ARGS go to it (python -m bench NAME --help)
    python -m bench all [--quick]         # run every one that can run here, in order

``--quick`` runs each at its smoke-test size (seconds to a few minutes), to check they work;
the figures of a quick run mean nothing. Each benchmark prints its table and writes its JSON
record under out/bench/ (``--out`` to change). The integrator extends REGISTRY as benchmarks land.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module with a ``main(argv)``, and the arguments of its quick form."""

    name: str
    module: str
    summary: str
    quick_args: tuple[str, ...] = ()
    # Why ``all`` skips it here, or None when it can run (checked only when asked).
    needs: str | None = None


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark(
        "fp8-memory",
        "bench.fp8_memory",
        "SD3.5 Medium replica: weight bytes, resident and load peak, bf16 vs FP8; Large bytes",
        ("--arch", "tiny"),
    ),
    Benchmark(
        "fp8-step-latency",
        "bench.fp8_step_latency",
        "one denoising step of a full-size SD3.5 transformer, bf16 vs FP8",
        ("--arch", "tiny", "--size", "64", "--runs", "1"),
    ),
    Benchmark(
        "fp8-weight-bytes",
        "bench.fp8_weight_bytes",
        "demo pipeline weight bytes per component, FP8 policy vs bf16",
    ),
    Benchmark(
        "server-overhead",
        "bench.server_overhead",
        "StreamGenerate end to end vs the same pipeline in-process",
        ("--runs", "2", "--steps", "2", "--size", "64"),
    ),
    Benchmark(
        "throughput",
        "bench.throughput",
        "images/s, P50, P99 at concurrency 1-16, replicas 1/2, batching off/on",
        (
            "--concurrency",
            "1",
            "2",
            "--requests",
            "2",
            "--replicas",
            "1",
            "--steps",
            "2",
            "--size",
            "64",
        ),
    ),
    Benchmark(
        "servers",
        "bench.servers",
        "images/s through one balancing client over 1, 2, 3 servers sharing a Redis job store",
        ("--servers", "1", "2", "--concurrency", "2", "--requests", "2", "--steps", "2"),
    ),
    Benchmark(
        "ray-peer",
        "bench.ray_peer.benchmark",
        "pointillist vs Ray Serve, same demo pipeline and load, over gRPC",
        (
            "--concurrency",
            "1",
            "2",
            "--requests",
            "2",
            "--replicas",
            "1",
            "--steps",
            "2",
            "--size",
            "64",
        ),
    ),
    Benchmark(
        "placement",
        "bench.placement",
        "replicas placed vs the optimum vs declared-fraction placement",
        ("--cases", "20"),
    ),
    Benchmark(
        "gpu",
        "bench.gpu",
        "GPU: step latency at 1024², NVML replica VRAM, replicas per GPU, images/min",
        (
            "--arch",
            "tiny",
            "--device",
            "cpu",
            "--size",
            "64",
            "--steps",
            "2",
            "--runs",
            "1",
            "--images",
            "1",
            "--max-replicas",
            "1",
        ),
        needs="cuda",
    ),
    Benchmark(
        "quality",
        "bench.quality",
        "FP8 vs bf16 images, same seeds: PSNR, SSIM, LPIPS (needs --weights)",
        ("--weights", "demo", "--prompts", "2", "--size", "64", "--steps", "2"),
        needs="weights",
    ),
    Benchmark(
        "tracing-overhead",
        "bench.tracing_overhead",
        "StreamGenerate with every span exported over OTLP vs tracing off",
        ("--runs", "2", "--steps", "2", "--size", "64"),
    ),
    Benchmark(
        "cache",
        "bench.cache",
        "result-cache hit vs miss, prompt-embedding hit vs miss, on the demo model",
        ("--runs", "2", "--steps", "2", "--size", "64"),
    ),
    Benchmark(
        "load",
        "bench.load",
        "concurrent streams for a fixed time: throughput, P50/P99, statuses, RSS before/after",
        ("--streams", "2", "--seconds", "3", "--max-requests", "4"),
    ),
    Benchmark(
        "watchers",
        "bench.watchers",
        "1 job x 1,000 WatchJob streams, 300 StreamGenerate: order, server CPU, health P99, RSS",
        (
            "--watchers",
            "20",
            "--streams",
            "6",
            "--channels",
            "3",
            "--steps",
            "2",
            "--replicas",
            "1",
        ),
    ),
    Benchmark(
        "compile-warmup",
        "bench.compile_warmup",
        "compiled demo replica: ready time on a cold vs a warm compile cache, and uncompiled",
        ("--restarts", "1", "--size", "64"),
    ),
    Benchmark("plot", "bench.plot", "throughput vs concurrency PNG from the records"),
)


def find(name: str) -> Benchmark:
    for benchmark in REGISTRY:
        if benchmark.name == name:
            return benchmark
    names = ", ".join(b.name for b in REGISTRY)
    raise SystemExit(f"unknown benchmark {name!r}; choose one of: {names}, all")


def run(benchmark: Benchmark, argv: list[str]) -> None:
    module = importlib.import_module(benchmark.module)
    module.main(argv)


def listing() -> str:
    width = max(len(b.name) for b in REGISTRY)
    lines = [f"  {b.name.ljust(width)}  {b.summary}" for b in REGISTRY]
    return "benchmarks (python -m bench NAME [ARGS], or all [--quick]):\n" + "\n".join(lines)


def skip_reason(benchmark: Benchmark, quick: bool) -> str | None:
    """Why ``all`` does not run this one here (its quick form always runs: it needs neither)."""
    if quick or benchmark.needs is None:
        return None
    if benchmark.needs == "cuda":
        import torch

        return None if torch.cuda.is_available() else "no CUDA here"
    return "needs real weights: python -m bench quality --weights FOLDER"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "list"):
        print(__doc__)
        print(listing())
        return 0
    name, rest = args[0], args[1:]
    if name != "all":
        run(find(name), rest)
        return 0
    quick = "--quick" in rest
    passed = [arg for arg in rest if arg != "--quick"]
    for benchmark in REGISTRY:
        reason = skip_reason(benchmark, quick)
        if reason:
            print(f"== {benchmark.name}: skipped ({reason})")
            continue
        print(f"== {benchmark.name}")
        run(benchmark, [*(benchmark.quick_args if quick else ()), *passed])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
