"""Many streams against one real server process (issue 14): 1 job watched by 1,000 concurrent
WatchJob streams, then 300 concurrent StreamGenerate calls from 30 channels.

    python -m bench watchers [--watchers 1000] [--streams 300] [--channels 30] [--steps 8]

Reports whether every watcher got every event in order, the server process's CPU seconds per
watcher and per stream (psutil on the server process alone; its workers do the denoising),
health-check latency P50/P99 sampled on a channel of its own while the load runs, and the
server's RSS before and after. The server is ``bench.demo_server_process`` (per-caller limits
off: all the load comes from one address).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import record
from bench.demo_server_process import DemoServerProcess
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc

T = TypeVar("T")
_TIMEOUT_S = 600.0


def _event_of(message: Any) -> tuple[str, int]:
    """What order is checked on: the event's kind and its step (0 where it has none)."""
    kind = message.WhichOneof("event")
    step = getattr(getattr(message, kind), "step", 0) if kind in ("progress", "preview") else 0
    return (kind, step)


def _in_order(events: list[tuple[str, int]], steps: int) -> bool:
    """Queued first (when seen), a result last, progress steps 1..steps each once in order."""
    progress = [step for kind, step in events if kind == "progress"]
    return bool(events) and events[-1][0] == "result" and progress == list(range(1, steps + 1))


class _Health:
    """Health Check latencies on a channel of its own, sampled until stopped."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self.latencies_ms: list[float] = []
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            began = time.perf_counter()
            await self._stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
            self.latencies_ms.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.02)  # a probe's pace, not a flood

    async def stop(self) -> dict[str, float]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()
        samples = sorted(self.latencies_ms) or [0.0]
        return {
            "samples": len(self.latencies_ms),
            "p50_ms": round(statistics.median(samples), 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        }


async def _measured(server: psutil.Process, work: Awaitable[T]) -> tuple[T, float, float]:
    """``work``'s value, the server process's CPU seconds and wall seconds while it ran."""
    before, began = server.cpu_times(), time.perf_counter()
    value = await work
    after = server.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return value, cpu, time.perf_counter() - began


async def _watch_one_job(address: str, watchers: int, steps: int, size: int) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(address)
    jobs = jobs_pb2_grpc.JobServiceStub(channel)
    params = pb.GenerationParameters(
        prompt="watched by many",
        width=size,
        height=size,
        steps=steps,
        seed=1,
        preview=pb.PreviewOptions(every_n_steps=1),  # the bulky events watchers share
    )
    job_id = (await jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=params))).job_id

    async def watch() -> list[tuple[str, int]]:
        call = jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=_TIMEOUT_S)
        return [_event_of(message) async for message in call]

    streams = await asyncio.gather(*(watch() for _ in range(watchers)))
    await channel.close()
    complete = [events for events in streams if _in_order(events, steps)]
    return {
        "watchers": watchers,
        "in_order": len(complete),
        "events_per_watcher": sorted({len(events) for events in streams}),
        "all_in_order": len(complete) == watchers,
    }


async def _many_streams(address: str, streams: int, channels: int, steps: int, size: int) -> Any:
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [pb_grpc.GenerationServiceStub(channel) for channel in opened]

    async def stream(index: int) -> bool:
        params = pb.GenerationParameters(
            prompt=f"stream {index}", width=size, height=size, steps=steps, seed=index
        )
        call = stubs[index % channels].StreamGenerate(
            pb.StreamGenerateRequest(parameters=params), timeout=_TIMEOUT_S
        )
        events = [_event_of(message) async for message in call]
        return _in_order(events, steps)

    done = await asyncio.gather(*(stream(index) for index in range(streams)))
    for channel in opened:
        await channel.close()
    return {"streams": streams, "channels": channels, "complete": sum(done)}


async def _run(address: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    server = psutil.Process(pid)
    rss_before = server.memory_info().rss
    health = _Health(address)
    watched, watch_cpu, watch_wall = await _measured(
        server, _watch_one_job(address, args.watchers, args.steps, args.size)
    )
    streamed, stream_cpu, stream_wall = await _measured(
        server, _many_streams(address, args.streams, args.channels, args.steps, args.size)
    )
    return {
        "watch": watched
        | {
            "server_cpu_s": round(watch_cpu, 3),
            "server_cpu_ms_per_watcher": round(watch_cpu * 1000 / args.watchers, 3),
            "wall_s": round(watch_wall, 2),
        },
        "stream": streamed
        | {
            "server_cpu_s": round(stream_cpu, 3),
            "server_cpu_ms_per_stream": round(stream_cpu * 1000 / args.streams, 3),
            "wall_s": round(stream_wall, 2),
        },
        "health": await health.stop(),
        "rss_mib": {
            "before": round(rss_before / 2**20, 1),
            "after": round(server.memory_info().rss / 2**20, 1),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    process = DemoServerProcess(
        replicas=args.replicas, batching=True, queue_capacity=args.streams + 8, unlimited=True
    )
    try:
        return asyncio.run(_run(process.address, process.process.pid, args))
    finally:
        process.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--channels", type=int, default=30)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = run(args)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    path = record.write("watchers", settings, results, args.out)
    watch, stream, health, rss = (results[k] for k in ("watch", "stream", "health", "rss_mib"))
    print(
        record.table(
            [
                ("measure", "value"),
                ("watchers in order", f"{watch['in_order']}/{watch['watchers']}"),
                ("server CPU ms / watcher", str(watch["server_cpu_ms_per_watcher"])),
                ("streams complete", f"{stream['complete']}/{stream['streams']}"),
                ("server CPU ms / stream", str(stream["server_cpu_ms_per_stream"])),
                ("health P50 / P99 ms", f"{health['p50_ms']} / {health['p99_ms']}"),
                ("RSS MiB before / after", f"{rss['before']} / {rss['after']}"),
            ]
        )
    )
    print(f"record: {path}")


if __name__ == "__main__":
    main()
