"""The Ray peer's pieces that do not need Ray: the proto compile, the deployment class serving
real demo images through the compiled servicer, and the load generator's caller for it.

Ray itself is never installed in CI (bench/ray_peer/venv.py does that for the benchmark only),
so here a plain grpc server stands where Ray Serve's gRPC proxy would.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from bench.load_generator import run_load
from bench.ray_peer import serve_app
from bench.ray_peer.benchmark import ratio_rows, ray_caller
from bench.ray_peer.stubs import SERVICER_FUNCTION, compile_stubs, import_stubs
from bench.ray_peer.venv import engine_requirements


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return compile_stubs(tmp_path_factory.mktemp("ray-stubs"))


def test_proto_compiles_to_the_servicer_ray_is_given(stubs):
    messages, services = import_stubs(stubs)

    module, function = SERVICER_FUNCTION.split(".")
    assert module == services.__name__
    assert callable(getattr(services, function))
    request = messages.GenerateRequest(prompt="x", width=64, height=64, steps=2, seed=1)
    assert messages.GenerateRequest.FromString(request.SerializeToString()) == request


def test_deployment_streams_steps_then_the_image_to_the_load_generator(stubs):
    messages, services = import_stubs(stubs)
    deployment = serve_app.DemoGenerator(threads=1)

    class Servicer(services.DemoServiceServicer):  # type: ignore[name-defined]
        def Generate(self, request, context):
            yield from deployment.Generate(request)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # one at a time, as in Ray
    services.add_DemoServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            request = messages.GenerateRequest(prompt="a", width=64, height=64, steps=3, seed=2)
            events = list(services.DemoServiceStub(channel).Generate(request, timeout=120))
        assert [e.step for e in events[:-1]] == [1, 2, 3]
        assert events[-1].image.startswith(b"\x89PNG")

        result = run_load(ray_caller(address, stubs, steps=2, size=64), concurrency=2, requests=3)
        assert result["statuses"] == {"OK": 3}
    finally:
        server.stop(grace=None)


def test_ratio_rows_compare_each_configuration_with_ray():
    cell = {"images_per_s": 2.0, "p50_s": 1.0, "p99_s": 2.0}
    ray_cell = {"images_per_s": 1.0, "p50_s": 2.0, "p99_s": 4.0}
    results = {
        "pointillist replicas=2 batching=off": {"4": cell},
        "ray-serve replicas=2": {"4": ray_cell},
    }

    (header, row) = ratio_rows(results, 2, [4])

    assert header[5:] == ("img/s ratio", "P50 ratio", "P99 ratio")
    assert row[0] == "replicas=2 batching=off"
    assert row[5:] == ("2.00", "0.50", "0.50")


def test_ray_venv_gets_the_engine_dependencies_not_the_server_extras():
    requirements = engine_requirements()

    assert any(r.startswith("torch") for r in requirements)
    assert any(r.startswith("diffusers") for r in requirements)
    assert not any(r.startswith("pointillist-client") for r in requirements)
