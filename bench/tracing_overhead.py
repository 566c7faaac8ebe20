"""The cost of tracing: one demo request end to end through StreamGenerate on a server that
exports every span over OTLP/gRPC (to a receiver on 127.0.0.1) against one with nothing
configured (OpenTelemetry's no-op tracer, workers record nothing), interleaved runs.

    python -m bench.tracing_overhead [--runs 20] [--steps 20] [--size 256]

Each traced request makes about 10 spans, one event per step, and sends the worker's phases
back with the result. The receiver runs in this process (the benchmark's, which also hosts both
servers), so the figure includes decoding the exports: an upper bound on what a collector
elsewhere would cost.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from bench import record
from bench.demo_run import demo_run_main
from bench.otlp_receiver import OtlpReceiver
from engine.config import demo_model_config
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.fleet import FleetSettings
from server.background import ServerThread
from server.settings import ServerSettings
from server.telemetry import Telemetry

TRACEPARENT = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)


def exporting_telemetry(endpoint: str) -> Telemetry:
    """What ``OTEL_EXPORTER_OTLP_ENDPOINT=endpoint`` gives a server (the exporter reads the
    process's environment, so it is set while the telemetry is built)."""
    saved = {key: os.environ.get(key) for key in ("OTEL_EXPORTER_OTLP_ENDPOINT",)}
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    try:
        return Telemetry.from_environment()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(runs: int, steps: int, size: int, out: Path) -> dict[str, Any]:
    receiver = OtlpReceiver().start()
    settings = ServerSettings(
        address="127.0.0.1:0",
        models=(dataclasses.replace(demo_model_config(), device="cpu"),),
        inventory="cpu",
        scheduler=FleetSettings(),
        result_cache="off",  # the runs repeat one seeded request: each must reach a replica
    )
    telemetry = exporting_telemetry(receiver.endpoint)
    assert telemetry.tracer_provider is not None
    traced = ServerThread(settings, telemetry=telemetry).start()
    plain = ServerThread(settings, telemetry=Telemetry()).start()
    request = pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(
            prompt="a lighthouse at dusk", width=size, height=size, steps=steps, seed=7
        )
    )
    samples: dict[str, list[float]] = {"traced": [], "off": []}
    try:
        with traced.channel() as traced_channel, plain.channel() as plain_channel:
            stubs = {
                "traced": pb_grpc.GenerationServiceStub(traced_channel),
                "off": pb_grpc.GenerationServiceStub(plain_channel),
            }

            def measure(name: str) -> None:
                started = time.perf_counter()
                events = list(
                    stubs[name].StreamGenerate(request, metadata=TRACEPARENT, timeout=300)
                )
                samples[name].append(time.perf_counter() - started)
                assert events[-1].HasField("result")

            for name in stubs:  # each server's first request pays one-off costs; not counted
                measure(name)
                samples[name].clear()
            for index in range(runs):
                # Alternate which goes first so neither always runs on a warmer machine.
                order = ("traced", "off") if index % 2 == 0 else ("off", "traced")
                for name in order:
                    measure(name)
        telemetry.tracer_provider.force_flush()
        spans = len(receiver.spans())
    finally:
        traced.stop()
        plain.stop()
        receiver.stop()
    traced_median = record.median(samples["traced"])
    off_median = record.median(samples["off"])
    ratios = sorted(t / o for t, o in zip(samples["traced"], samples["off"], strict=True))
    results: dict[str, Any] = {
        "traced_median_s": traced_median,
        "off_median_s": off_median,
        "ratio_of_medians": traced_median / off_median,
        "median_pairwise_ratio": record.median(ratios),
        "spans_received": spans,
        "traced_samples_s": samples["traced"],
        "off_samples_s": samples["off"],
    }
    path = record.write(
        "tracing_overhead", {"runs": runs, "steps": steps, "size": size}, results, out
    )
    print(
        record.table(
            [
                ("server", "median s", "runs"),
                ("tracing exported over OTLP/gRPC", f"{traced_median:.4f}", str(runs)),
                ("tracing off (nothing configured)", f"{off_median:.4f}", str(runs)),
                ("ratio traced / off", f"{results['ratio_of_medians']:.3f}", ""),
                ("median of pairwise ratios", f"{results['median_pairwise_ratio']:.3f}", ""),
                ("spans received", str(spans), ""),
            ]
        )
    )
    print(f"record: {path}")
    return results


def main(argv: list[str] | None = None) -> None:
    demo_run_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
