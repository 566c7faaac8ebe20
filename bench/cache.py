"""Caches, side by side in one run: a result-cache hit against a miss (through the server), and a
prompt-embedding hit against a miss (the engine in-process), on the demo model.

    python -m bench.cache [--runs 10] [--steps 20] [--size 256]

Result cache: each miss is a seeded request never seen before (it runs on the replica), each hit
is the same request again (served from the in-process store). Prompt embeddings: each miss is a
prompt never seen before, each hit the same prompt with another seed (so the whole pipeline runs,
but not the text encoders). Misses and hits alternate, so neither always meets a warmer machine.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
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
    demo = demo_model_config()
    # Limits at the measured size: the replica warms up at its largest request, and nothing
    # larger is asked here.
    limits = dataclasses.replace(demo.limits, max_width=size, max_height=size, max_images=1)
    config = dataclasses.replace(demo, device="cpu", limits=limits)
    results = {
        "result_cache": result_cache(config, runs, steps, size),
        "prompt_embeddings": prompt_embeddings(config, runs, steps, size),
    }
    path = record.write("cache", {"runs": runs, "steps": steps, "size": size}, results, out)
    rows = [("what", "miss median s", "hit median s", "miss / hit")]
    for name, label in (
        ("result_cache", "result cache: StreamGenerate, whole request"),
        ("prompt_embeddings", "prompt embeddings: engine.generate, whole request"),
        ("text_encoding", "prompt embeddings: text-encoding phase alone"),
    ):
        figures = results["prompt_embeddings"] if name == "text_encoding" else results[name]
        prefix = "text_encoding_" if name == "text_encoding" else ""
        miss, hit = figures[f"{prefix}miss_median_s"], figures[f"{prefix}hit_median_s"]
        rows.append((label, f"{miss:.4f}", f"{hit:.5f}", f"{miss / hit:.1f}x"))
    print(record.table(rows))
    print(f"record: {path}")
    return results


def result_cache(config: Any, runs: int, steps: int, size: int) -> dict[str, Any]:
    settings = ServerSettings(address="127.0.0.1:0", models=(config,), inventory="cpu")
    server = ServerThread(settings).start()
    misses: list[float] = []
    hits: list[float] = []
    try:
        with server.channel() as channel:
            stub = pb_grpc.GenerationServiceStub(channel)

            def timed(seed: int) -> tuple[float, pb.GenerationResult]:
                request = pb.StreamGenerateRequest(
                    parameters=pb.GenerationParameters(
                        prompt="a lighthouse at dusk",
                        width=size,
                        height=size,
                        steps=steps,
                        seed=seed,
                    )
                )
                started = time.perf_counter()
                events = list(stub.StreamGenerate(request, timeout=300))
                elapsed = time.perf_counter() - started
                assert events[-1].HasField("result")
                return elapsed, events[-1].result

            timed(10_000)  # one-off costs of the first request; not counted
            for index in range(runs):
                miss_s, miss = timed(index)
                hit_s, hit = timed(index)
                assert not miss.cached and hit.cached
                assert hit.images[0].data == miss.images[0].data
                misses.append(miss_s)
                hits.append(hit_s)
    finally:
        server.stop()
    return _summary(misses, hits)


def prompt_embeddings(config: Any, runs: int, steps: int, size: int) -> dict[str, Any]:
    engine = Engine.load(config)
    engine.warm_up()
    misses: list[float] = []
    hits: list[float] = []
    encode_misses: list[float] = []
    encode_hits: list[float] = []
    for index in range(runs):
        spec = GenerationSpec(
            model=config.id,
            prompt=f"a lighthouse at dusk, {uuid.uuid4().hex}",  # never seen: a miss
            negative_prompt="blurry",
            width=size,
            height=size,
            steps=steps,
            guidance_scale=config.defaults.guidance_scale,
            seed=index,
        )
        for target, phase, spec_now, expect_hit in (
            (misses, encode_misses, spec, False),
            (hits, encode_hits, dataclasses.replace(spec, seed=index + 1000), True),
        ):
            started = time.perf_counter()
            output = engine.generate(spec_now, lambda event: None, lambda: False)
            target.append(time.perf_counter() - started)
            phase.append(output.timings.text_encoding_s)
            assert output.timings.text_encoding_cached is expect_hit
    summary = _summary(misses, hits)
    summary.update(
        {
            "text_encoding_miss_median_s": record.median(encode_misses),
            "text_encoding_hit_median_s": record.median(encode_hits),
            "text_encoding_miss_samples_s": encode_misses,
            "text_encoding_hit_samples_s": encode_hits,
        }
    )
    return summary


def _summary(misses: list[float], hits: list[float]) -> dict[str, Any]:
    miss, hit = record.median(misses), record.median(hits)
    return {
        "miss_median_s": miss,
        "hit_median_s": hit,
        "ratio_miss_over_hit": miss / hit,
        "miss_samples_s": misses,
        "hit_samples_s": hits,
    }


def main(argv: list[str] | None = None) -> None:
    demo_run_main(run, __doc__, argv, runs=10)


if __name__ == "__main__":
    main()
