"""``pointillist quantize`` folders (torchao): written once, read back without 16-bit weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from engine import fp8_checkpoint, fp8_torchao
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


def test_the_folder_holds_a_marker_and_torchao_state_dicts(checkpoint: Path) -> None:
    marker = json.loads((checkpoint / MARKER_FILE).read_text())
    assert marker["format_version"] == 2
    assert "torchao" in marker["weights"]
    assert marker["quantized_components"] == ["text_encoder_3", "transformer"]
    assert marker["source"] == "demo"
    assert marker["source_revision"].startswith("demo-v1-")
    for name in ("transformer", "text_encoder_3"):
        assert (checkpoint / name / "fp8-torchao.safetensors").is_file()
        assert (checkpoint / name / "config.json").is_file()
        assert not (checkpoint / name / "quanto_qmap.json").exists()
    # The 16-bit components are plain diffusers output.
    assert (checkpoint / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoint / "text_encoder" / "model.safetensors").is_file()


def test_loaded_checkpoint_draws_the_same_bytes_as_quantize_at_load(
    checkpoint_engine: Engine, fp8_engine: Engine, make_spec: SpecFactory
) -> None:
    spec = make_spec(steps=5, num_images=2)
    from_folder = checkpoint_engine.generate(spec, lambda event: None, lambda: False)
    at_load = fp8_engine.generate(spec, lambda event: None, lambda: False)
    assert [i.data for i in from_folder.images] == [i.data for i in at_load.images]
    # Same records too: per component weight and compute format.
    assert checkpoint_engine.loaded.precisions == fp8_engine.loaded.precisions


def test_loaded_checkpoint_linear_weights_are_torchao_fp8(checkpoint_engine: Engine) -> None:
    pipe = checkpoint_engine.pipe
    for component in (pipe.transformer, pipe.text_encoder_3):
        linears = [m for m in component.modules() if isinstance(m, torch.nn.Linear)]
        assert linears
        for linear in linears:
            assert fp8_torchao.is_fp8_weight(linear.weight)
        assert not fp8_torchao.fp8_matmul(component)  # weight-only on the CPU
        assert not any(p.device.type == "meta" for p in component.parameters())
    # T5's tied input embedding is tied again after loading.
    t5 = pipe.text_encoder_3
    assert t5.encoder.embed_tokens.weight is t5.shared.weight
    precisions = {p.component: (p.weights, p.compute) for p in checkpoint_engine.loaded.precisions}
    assert precisions["transformer"] == precisions["text_encoder_3"] == ("fp8_e4m3", "bf16")
    assert precisions["vae"] == ("bf16", "bf16")
    reason = checkpoint_engine.loaded.precision_reason
    assert "already stores" in reason and "torchao weight-only" in reason
    assert checkpoint_engine.loaded.weights_revision.startswith("sha256-")


def test_loading_never_builds_a_16_bit_transformer(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quantizing goes through fp8_torchao.quantize_fp8; reading the folder must not.
    def refuse(module: torch.nn.Module, mode: fp8_torchao.Fp8Mode) -> None:
        raise AssertionError("quantize_fp8 called while loading an FP8 folder")

    # And every module the folder's state is assigned to holds no weights yet (all on meta).
    built: list[str] = []
    original = fp8_checkpoint._build_empty

    def check_empty(cls: object, folder: Path, saved: set[str]) -> torch.nn.Module:
        module = original(cls, folder, saved)
        assert all(param.device.type == "meta" for param in module.parameters())
        built.append(type(module).__name__)
        return module

    monkeypatch.setattr(fp8_torchao, "quantize_fp8", refuse)
    monkeypatch.setattr(fp8_checkpoint, "_build_empty", check_empty)
    config = dataclasses.replace(demo_model_config(), source=str(checkpoint), device="cpu")
    engine = Engine.load(config)
    assert sorted(built) == ["SD3Transformer2DModel", "T5EncoderModel"]
    assert fp8_torchao.is_fp8_quantized(engine.pipe.transformer)


def test_a_16_bit_policy_on_the_folder_is_a_load_error(checkpoint: Path) -> None:
    config = dataclasses.replace(
        demo_model_config(), source=str(checkpoint), precision=PrecisionPolicy.BF16
    )
    with pytest.raises(ModelLoadError, match="FP8 only"):
        Engine.load(config)


def test_a_torchao_folder_refuses_fp16_compute(checkpoint: Path) -> None:
    marker = fp8_checkpoint.read_marker(checkpoint)
    assert marker is not None and marker.backend == "torchao"
    with pytest.raises(ValueError, match="quantized at load"):
        fp8_checkpoint.load_fp8_checkpoint(checkpoint, marker, torch.float16, {})


def test_a_marker_of_an_unknown_version_says_how_to_re_quantize(
    checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "future"
    folder.mkdir()
    marker = json.loads((checkpoint / MARKER_FILE).read_text())
    (folder / MARKER_FILE).write_text(json.dumps({**marker, "format_version": 99}))
    with pytest.raises(ValueError, match="re-run `pointillist quantize"):
        fp8_checkpoint.read_marker(folder)


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
    at_load = load(saved_demo, PrecisionPolicy.FP8)
    spec = make_spec(steps=3)
    a = from_folder.generate(spec, lambda event: None, lambda: False)
    b = at_load.generate(spec, lambda event: None, lambda: False)
    assert a.images[0].data == b.images[0].data


def test_w8a8_re_quantizes_one_layer_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchao builds W8A8 only on CUDA compute capability >= 8.9, so the CPU checks what is
    # handed to it: each Linear alone, with its weight dequantized to a plain 16-bit tensor.
    engine = load_demo(PrecisionPolicy.FP8)
    transformer = engine.pipe.transformer
    linears = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
    calls: list[tuple[torch.nn.Module, object]] = []

    def record(module: torch.nn.Module, config: object) -> None:
        assert isinstance(module, torch.nn.Linear)
        assert type(module.weight.data) is torch.Tensor
        assert module.weight.dtype == torch.bfloat16
        calls.append((module, config))

    monkeypatch.setattr(fp8_torchao, "_quantize_", record)
    changed = fp8_torchao.requantize_fp8(transformer, fp8_torchao.Fp8Mode.DYNAMIC_ROW)
    assert changed == len(linears) == len(calls)
    assert [m for m, _ in calls] == linears
    assert all(type(c).__name__ == "Float8DynamicActivationFloat8WeightConfig" for _, c in calls)
    # Weight-only asked of weight-only layers changes nothing.
    assert (
        fp8_torchao.requantize_fp8(engine.pipe.text_encoder_3, fp8_torchao.Fp8Mode.WEIGHT_ONLY) == 0
    )
