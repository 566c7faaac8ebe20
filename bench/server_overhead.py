"""Server overhead: one demo request end to end through StreamGenerate (gRPC, scheduler, worker
process, IPC) against the same pipeline called in-process, same settings, interleaved runs.

    python -m bench.server_overhead [--runs 20] [--steps 20] [--size 256]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import record
from bench.demo_run import demo_run_main
from engine.config import demo_model_config
from engine.engine import Engine
from engine.job import GenerationSpec
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.background import ServerThread
from server.settings import ServerSettings


def run(runs: int, steps: int, size: int, out: Path) -> dict[str, Any]:
    config = demo_model_config()
    server = ServerThread(
        ServerSettings(
            # The runs repeat one seeded request: each must reach the replica, not the result cache.
            address="127.0.0.1:0",
            models=(config,),
            result_cache="off",
        )
    ).start()
    engine = Engine.load(config)
    engine.warm_up()
    spec = GenerationSpec(
        model=config.id,
        prompt="a lighthouse at dusk",
        negative_prompt="",
        width=size,
        height=size,
        steps=steps,
        guidance_scale=config.defaults.guidance_scale,
        seed=7,
    )
    request = pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(
            prompt=spec.prompt, width=size, height=size, steps=steps, seed=spec.seed
        )
    )
    through_server: list[float] = []
    in_process: list[float] = []
    try:
        with server.channel() as channel:
            stub = pb_grpc.GenerationServiceStub(channel)

            def via_server() -> None:
                started = time.perf_counter()
                events = list(stub.StreamGenerate(request, timeout=300))
                through_server.append(time.perf_counter() - started)
                assert events[-1].HasField("result")

            def direct() -> None:
                started = time.perf_counter()
                engine.generate(spec, lambda event: None, lambda: False)
                in_process.append(time.perf_counter() - started)

            via_server()  # the server's first request pays one-off costs; not counted
            through_server.clear()
            for index in range(runs):
                # Alternate which goes first so neither always runs on a warmer machine.
                for measure in (via_server, direct) if index % 2 == 0 else (direct, via_server):
                    measure()
    finally:
        server.stop()
    server_median = record.median(through_server)
    direct_median = record.median(in_process)
    ratios = sorted(s / d for s, d in zip(through_server, in_process, strict=True))
    results: dict[str, Any] = {
        "server_median_s": server_median,
        "in_process_median_s": direct_median,
        "ratio_of_medians": server_median / direct_median,
        "median_pairwise_ratio": record.median(ratios),
        "server_samples_s": through_server,
        "in_process_samples_s": in_process,
    }
    path = record.write(
        "server_overhead", {"runs": runs, "steps": steps, "size": size}, results, out
    )
    print(
        record.table(
            [
                ("path", "median s", "runs"),
                ("StreamGenerate (server)", f"{server_median:.4f}", str(runs)),
                ("engine.generate (in-process)", f"{direct_median:.4f}", str(runs)),
                ("ratio server / in-process", f"{results['ratio_of_medians']:.3f}", ""),
                ("median of pairwise ratios", f"{results['median_pairwise_ratio']:.3f}", ""),
            ]
        )
    )
    print(f"record: {path}")
    return results


def main(argv: list[str] | None = None) -> None:
    demo_run_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
