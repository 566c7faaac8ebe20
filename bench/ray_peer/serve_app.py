"""The demo pipeline served by Ray Serve over gRPC. Runs in the Ray venv, never in pointillist's.

    <ray-venv>/bin/python -m bench.ray_peer.serve_app --replicas 2 --port 9000 --stubs DIR

Each Ray replica loads the demo exactly as a pointillist worker does (``Engine.load`` of
``demo_model_config()`` on the CPU, warmed up) with ``cores // replicas`` torch threads, and takes
one request at a time (``max_ongoing_requests=1``: one pipeline object is not safe to call from
two threads). Ray Serve queues the rest. Prints ``RAY_SERVE_READY`` once the application is
running, and shuts Serve and Ray down when its standard input closes.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

READY = "RAY_SERVE_READY"
APP_NAME = "demo"


class DemoGenerator:
    """A Ray Serve deployment (wrapped by ``serve.deployment`` in ``main``)."""

    def __init__(self, threads: int) -> None:
        import torch

        from engine.config import demo_model_config
        from engine.engine import Engine

        torch.set_num_threads(threads)
        config = demo_model_config()
        self.config = config
        self.engine = Engine.load(config)
        self.engine.warm_up()

    def Generate(self, request: Any) -> Iterator[Any]:  # the gRPC method's name
        import demo_service_pb2 as pb

        from engine.job import GenerationSpec, StepProgress

        spec = GenerationSpec(
            model=self.config.id,
            prompt=request.prompt,
            negative_prompt="",
            width=request.width,
            height=request.height,
            steps=request.steps,
            guidance_scale=self.config.defaults.guidance_scale,
            seed=request.seed,
        )
        events: queue.Queue[Any] = queue.Queue()
        done = object()

        def on_event(event: object) -> None:
            if isinstance(event, StepProgress):
                events.put(pb.GenerateEvent(step=event.step))

        def generate() -> None:
            try:
                output = self.engine.generate(spec, on_event, lambda: False)
                events.put(pb.GenerateEvent(image=output.images[0].data))
            except BaseException as error:  # re-raised in the caller's thread below
                events.put(error)
            events.put(done)

        # The engine reports steps through a callback; a thread lets this generator stream them.
        threading.Thread(target=generate, daemon=True).start()
        while (item := events.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, required=True)
    parser.add_argument("--port", type=int, required=True, help="the gRPC proxy's port")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--stubs", required=True)
    args = parser.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # Ray's workers (the proxy imports the servicer, replicas import engine) inherit this.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [args.stubs, repo, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    sys.path[:0] = [args.stubs, repo]

    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    cores = os.cpu_count() or 1
    ray.init(num_cpus=max(cores, args.replicas), include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"host": "127.0.0.1", "port": args.http_port},
        grpc_options=gRPCOptions(
            port=args.port,
            grpc_servicer_functions=["demo_service_pb2_grpc.add_DemoServiceServicer_to_server"],
        ),
    )
    deployment = serve.deployment(
        DemoGenerator,
        num_replicas=args.replicas,
        max_ongoing_requests=1,
        # Ray would reject more replicas than CPUs at 1 CPU each; cores are shared as in
        # pointillist, where each replica takes cores // replicas threads.
        ray_actor_options={"num_cpus": 0},
    )
    serve.run(deployment.bind(max(1, cores // args.replicas)), name=APP_NAME)
    print(READY, flush=True)
    sys.stdin.read()  # until the benchmark closes our standard input
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
