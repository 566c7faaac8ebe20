"""``pointillist quantize`` folders: written once, read back without 16-bit weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import fp8
from engine.config import PrecisionPolicy, demo_model_config
from engine.engine import Engine
from engine.fp8_checkpoint import MARKER_FILE, quantize_checkpoint
from engine.loading import ModelLoadError
from tests.engine.conftest import SpecFactory, load_demo


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("fp8") / "demo-fp8"
    quantize_checkpoint("demo", dest)
    return dest


@pytest.fixture(scope="module")
def checkpoint_engine(checkpoint: Path) -> Engine:
    config = dataclasses.replace(demo_model_config(), source=str(checkpoint), device="cpu")
    return Engine.load(config)


def test_the_folder_holds_a_marker_and_fp8_state_dicts(checkpoint: Path) -> None:
    marker = json.loads((checkpoint / MARKER_FILE).read_text())
    assert marker["format_version"] == 1
    assert marker["quantized_components"] == ["text_encoder_3", "transformer"]
    assert marker["source"] == "demo"
    assert marker["source_revision"].startswith("demo-v1-")
    for name in ("transformer", "text_encoder_3"):
        assert (checkpoint / name / "fp8-quanto.safetensors").is_file()
        assert (checkpoint / name / "quanto_qmap.json").is_file()
        assert (checkpoint / name / "config.json").is_file()
    # The 16-bit components are plain diffusers output.
    assert (checkpoint / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoint / "text_encoder" / "model.safetensors").is_file()


def test_loaded_checkpoint_draws_the_same_bytes_as_quanto_at_load(
    checkpoint_engine: Engine, make_spec: SpecFactory
) -> None:
    # The folder holds quanto weights; quantize-at-load now uses torchao, so the reference is
    # a bf16 demo quantized with quanto by hand, as the folder was written.
    quanto_engine = load_demo(PrecisionPolicy.BF16)
    for component in (quanto_engine.pipe.transformer, quanto_engine.pipe.text_encoder_3):
        fp8.quantize_fp8(component)
        component.requires_grad_(False)
    spec = make_spec(steps=5, num_images=2)
    from_folder = checkpoint_engine.generate(spec, lambda event: None, lambda: False)
    at_load = quanto_engine.generate(spec, lambda event: None, lambda: False)
    assert [i.data for i in from_folder.images] == [i.data for i in at_load.images]


def test_loaded_checkpoint_linear_weights_are_fp8(checkpoint_engine: Engine) -> None:
    pipe = checkpoint_engine.pipe
    for component in (pipe.transformer, pipe.text_encoder_3):
        linears = [m for m in component.modules() if isinstance(m, torch.nn.Linear)]
        assert linears
        for linear in linears:
            assert fp8.is_fp8_weight(linear.weight)
        assert not any(p.device.type == "meta" for p in component.parameters())
    # T5's tied input embedding is tied again after loading.
    t5 = pipe.text_encoder_3
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    precisions = {p.component: p.weights for p in checkpoint_engine.loaded.precisions}
    assert precisions["transformer"] == precisions["text_encoder_3"] == "fp8_e4m3"
    assert precisions["vae"] == "bf16"
    assert "already stores" in checkpoint_engine.loaded.precision_reason
    assert checkpoint_engine.loaded.weights_revision.startswith("sha256-")


def test_loading_never_builds_a_16_bit_transformer(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quantizing at load goes through fp8.quantize_fp8; reading the folder must not.
    def refuse(module: torch.nn.Module) -> None:
        raise AssertionError("quantize_fp8 called while loading an FP8 folder")

    # And the modules handed to requantize hold no weights yet: every parameter is on meta.
    requantized: list[str] = []
    original = fp8.requantize_fp8

    def check_empty(module: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        assert all(param.device.type == "meta" for param in module.parameters())
        requantized.append(type(module).__name__)
        original(module, *args, **kwargs)

    monkeypatch.setattr(fp8, "quantize_fp8", refuse)
    monkeypatch.setattr(fp8, "requantize_fp8", check_empty)
    config = dataclasses.replace(demo_model_config(), source=str(checkpoint), device="cpu")
    engine = Engine.load(config)
    assert sorted(requantized) == ["SD3Transformer2DModel", "T5EncoderModel"]
    assert fp8.is_fp8_quantized(engine.pipe.transformer)


def test_a_16_bit_policy_on_the_folder_is_a_load_error(checkpoint: Path) -> None:
    config = dataclasses.replace(
        demo_model_config(), source=str(checkpoint), precision=PrecisionPolicy.BF16
    )
    with pytest.raises(ModelLoadError, match="FP8 only"):
        Engine.load(config)


def test_quantize_refuses_a_folder_with_files(checkpoint: Path) -> None:
    with pytest.raises(FileExistsError):
        quantize_checkpoint("demo", checkpoint)


def test_quantizing_an_fp8_folder_again_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="already is an FP8 checkpoint"):
        quantize_checkpoint(str(checkpoint), tmp_path / "again")


def test_a_local_folder_quantizes_like_it_loads(
    saved_demo: Path, tmp_path: Path, make_spec: SpecFactory
) -> None:
    # A folder is read through from_pretrained (not built in code like the demo): the FP8
    # folder made from it must still draw what quantizing that folder at load draws.
    quantize_checkpoint(str(saved_demo), tmp_path / "fp8")
    marker = json.loads((tmp_path / "fp8" / MARKER_FILE).read_text())
    assert marker["source_revision"].startswith("sha256-")

    def load(source: Path, precision: PrecisionPolicy) -> Engine:
        config = dataclasses.replace(
            demo_model_config(), source=str(source), precision=precision, device="cpu"
        )
        return Engine.load(config)

    from_folder = load(tmp_path / "fp8", PrecisionPolicy.AUTO)
    # The folder holds quanto weights: the reference quantizes the bf16 load with quanto.
    at_load = load(saved_demo, PrecisionPolicy.BF16)
    for component in (at_load.pipe.transformer, at_load.pipe.text_encoder_3):
        fp8.quantize_fp8(component)
        component.requires_grad_(False)
    spec = make_spec(steps=3)
    a = from_folder.generate(spec, lambda event: None, lambda: False)
    b = at_load.generate(spec, lambda event: None, lambda: False)
    assert a.images[0].data == b.images[0].data


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
