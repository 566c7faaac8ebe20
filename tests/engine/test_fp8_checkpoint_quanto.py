"""Version 1 ``pointillist quantize`` folders (optimum-quanto) still load and say to re-run it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from engine import fp8
from engine.config import PrecisionPolicy, demo_model_config
from engine.engine import Engine
from engine.fp8_checkpoint import read_marker
from tests.engine.conftest import SpecFactory, load_demo
from tests.engine.quanto_folder import write_quanto_folder


@pytest.fixture(scope="module")
def quanto_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("quanto") / "demo-fp8-v1"
    write_quanto_folder("demo", dest)
    return dest


@pytest.fixture(scope="module")
def quanto_engine(quanto_folder: Path) -> Engine:
    config = dataclasses.replace(demo_model_config(), source=str(quanto_folder), device="cpu")
    return Engine.load(config)


def test_the_marker_names_quanto(quanto_folder: Path) -> None:
    marker = read_marker(quanto_folder)
    assert marker is not None
    assert (marker.format_version, marker.backend) == (1, "quanto")


def test_a_quanto_folder_draws_what_quanto_at_load_draws(
    quanto_engine: Engine, make_spec: SpecFactory
) -> None:
    reference = load_demo(PrecisionPolicy.BF16)
    for component in (reference.pipe.transformer, reference.pipe.text_encoder_3):
        fp8.quantize_fp8(component)
        component.requires_grad_(False)
    spec = make_spec(steps=5, num_images=2)
    from_folder = quanto_engine.generate(spec, lambda event: None, lambda: False)
    at_load = reference.generate(spec, lambda event: None, lambda: False)
    assert [i.data for i in from_folder.images] == [i.data for i in at_load.images]


def test_a_quanto_folder_reports_fp8_and_says_how_to_re_quantize(quanto_engine: Engine) -> None:
    pipe = quanto_engine.pipe
    assert fp8.is_fp8_quantized(pipe.transformer) and fp8.is_fp8_quantized(pipe.text_encoder_3)
    assert pipe.text_encoder_3.encoder.embed_tokens.weight is pipe.text_encoder_3.shared.weight
    precisions = {p.component: (p.weights, p.compute) for p in quanto_engine.loaded.precisions}
    assert precisions["transformer"] == ("fp8_e4m3", "bf16")
    reason = quanto_engine.loaded.precision_reason
    assert "optimum-quanto" in reason and "re-run `pointillist quantize`" in reason


def test_requantize_keeps_each_saved_dtype(saved_demo: Path) -> None:
    # In fp16, transformers keeps T5's ``wo`` layers in float32 (fp16 overflows there), so an
    # FP8 T5 mixes fp16 and fp32 scales; a meta-built T5 must come back with the same mix.
    from transformers import T5EncoderModel

    source = T5EncoderModel.from_pretrained(saved_demo / "text_encoder_3", dtype=torch.float16)
    fp8.quantize_fp8(source)
    with torch.device("meta"):
        empty = T5EncoderModel(source.config)
    fp8.requantize_fp8(empty, source.state_dict(), fp8.fp8_quantization_map(source), torch.float16)
    wo = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    loaded = dict(empty.named_parameters())
    original = dict(source.named_parameters())
    assert loaded[wo].dtype == original[wo].dtype == torch.float32
    assert loaded[q].dtype == original[q].dtype == torch.float16
    assert fp8.is_fp8_weight(loaded[wo]) and fp8.is_fp8_weight(loaded[q])
    empty.eval()  # a freshly built module is in training mode (dropout on)
    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        assert torch.equal(empty(ids)[0], source(ids)[0])
