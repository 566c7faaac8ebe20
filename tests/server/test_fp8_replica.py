"""A torchao FP8 demo replica serves through the real server: quantized at load and from a
``pointillist quantize`` folder, with the same image bytes, and both say per component what
their weights are stored in and what their arithmetic runs in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from engine.config import PrecisionPolicy, demo_model_config
from engine.fp8_checkpoint import quantize_checkpoint
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from server.background import ServerThread
from tests.conftest import demo_settings

AT_LOAD, FROM_FOLDER = "demo-fp8", "demo-fp8-folder"
FP8_COMPONENTS = ("transformer", "text_encoder_3")


@pytest.fixture(scope="module")
def fp8_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("fp8") / "demo-fp8"
    quantize_checkpoint("demo", folder)
    fp8_demo = dataclasses.replace(
        demo_model_config(AT_LOAD), precision=PrecisionPolicy.FP8, device="cpu"
    )
    from_folder = dataclasses.replace(
        demo_model_config(FROM_FOLDER), source=str(folder), device="cpu"
    )
    server = ServerThread(demo_settings(models=(fp8_demo, from_folder))).start()
    yield server
    server.stop()


@pytest.fixture
def fp8_stub(fp8_server: ServerThread) -> Iterator[pb_grpc.GenerationServiceStub]:
    with fp8_server.channel() as channel:
        yield pb_grpc.GenerationServiceStub(channel)


def generate(stub: pb_grpc.GenerationServiceStub, model: str) -> pb.GenerationResult:
    parameters = pb.GenerationParameters(
        model=model, prompt="a lighthouse at dusk", width=64, height=64, steps=3, seed=7
    )
    response = stub.Generate(pb.GenerateRequest(parameters=parameters), timeout=120)
    return response.result


def formats(precisions: object) -> dict[str, tuple[int, int]]:
    return {p.component: (p.weights, p.compute) for p in precisions}  # type: ignore[attr-defined]


def test_list_models_reports_fp8_weights_and_bf16_compute_per_component(fp8_stub):
    models = {m.id: m for m in fp8_stub.ListModels(pb.ListModelsRequest(), timeout=10).models}
    for model_id in (AT_LOAD, FROM_FOLDER):
        model = models[model_id]
        assert model.ready
        # The policy as configured: the folder's model asks for auto; its FP8 folder makes it fp8.
        assert model.precision_policy == ("fp8" if model_id == AT_LOAD else "auto")
        by_component = formats(model.precisions)
        for name in FP8_COMPONENTS:
            # Weight-only on the CPU: FP8 storage, bf16 matmuls.
            assert by_component[name] == (pb.PRECISION_FP8_E4M3, pb.PRECISION_BF16), name
        for name in ("text_encoder", "text_encoder_2", "vae"):
            assert by_component[name] == (pb.PRECISION_BF16, pb.PRECISION_BF16), name
        assert "torchao weight-only" in model.precision_reason
        assert "does not make a step faster" in model.precision_reason
    assert "already stores" in models[FROM_FOLDER].precision_reason


def test_fp8_replicas_serve_the_same_bytes_and_record_their_formats(fp8_stub):
    at_load = generate(fp8_stub, AT_LOAD)
    from_folder = generate(fp8_stub, FROM_FOLDER)
    assert at_load.images[0].data == from_folder.images[0].data
    for result in (at_load, from_folder):
        record = result.reproducibility
        by_component = formats(record.precisions)
        assert by_component["transformer"] == (pb.PRECISION_FP8_E4M3, pb.PRECISION_BF16)
        assert by_component["text_encoder_3"] == (pb.PRECISION_FP8_E4M3, pb.PRECISION_BF16)
        assert record.library_versions["torchao"] != "not installed"
    # The folder's weights are its own revision; the demo's are the demo's.
    assert at_load.reproducibility.weights_revision.startswith("demo-v1-")
    assert from_folder.reproducibility.weights_revision.startswith("sha256-")


def test_an_fp8_replica_gives_the_same_bytes_twice(fp8_stub):
    assert generate(fp8_stub, AT_LOAD).images[0].data == generate(fp8_stub, AT_LOAD).images[0].data
