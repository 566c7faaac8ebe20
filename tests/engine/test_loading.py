"""Model sources: the demo, a local diffusers folder, a hub id without a network, bad paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from engine.config import PrecisionPolicy, demo_model_config
from engine.demo import build_demo_pipeline
from engine.engine import Engine
from engine.loading import ModelLoadError, locate_source, resolve_device
from tests.engine.conftest import SpecFactory


def test_a_saved_folder_loads_and_draws_what_the_demo_draws(
    saved_demo: Path, fp32_engine: Engine, make_spec: SpecFactory
) -> None:
    config = dataclasses.replace(
        demo_model_config(), source=str(saved_demo), precision=PrecisionPolicy.FP32, device="cpu"
    )
    engine = Engine.load(config)
    assert engine.loaded.weights_revision.startswith("sha256-")
    assert {p.weights for p in engine.loaded.precisions} == {"fp32"}

    spec = make_spec(steps=3)
    from_folder = engine.generate(spec, lambda event: None, lambda: False)
    built = fp32_engine.generate(spec, lambda event: None, lambda: False)
    assert from_folder.images[0].data == built.images[0].data


def test_a_saved_folder_loads_in_fp8(saved_demo: Path, make_spec: SpecFactory) -> None:
    config = dataclasses.replace(
        demo_model_config(), source=str(saved_demo), precision=PrecisionPolicy.FP8, device="cpu"
    )
    engine = Engine.load(config)
    precisions = {p.component: p.weights for p in engine.loaded.precisions}
    assert precisions["transformer"] == "fp8_e4m3"
    assert precisions["text_encoder_3"] == "fp8_e4m3"
    assert len(engine.generate(make_spec(steps=2), lambda e: None, lambda: False).images) == 1


def test_the_folder_fingerprint_is_stable_and_content_bound(
    saved_demo: Path, tmp_path: Path
) -> None:
    from engine.provenance import folder_fingerprint

    assert folder_fingerprint(saved_demo) == folder_fingerprint(saved_demo)
    copy = tmp_path / "copy"
    build_demo_pipeline().save_pretrained(copy)
    assert folder_fingerprint(copy) == folder_fingerprint(saved_demo)
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"shift": 3.0', '"shift": 2.0'))
    assert folder_fingerprint(copy) != folder_fingerprint(saved_demo)


def test_a_hub_id_without_network_is_a_clear_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = dataclasses.replace(
        demo_model_config(), source="pointillist-tests/no-such-model", revision="main"
    )
    with pytest.raises(ModelLoadError) as error:
        Engine.load(config)
    message = str(error.value)
    assert "pointillist-tests/no-such-model" in message
    assert "could not be fetched" in message
    assert "local diffusers folder" in message


def test_a_missing_path_is_a_load_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sd35"
    config = dataclasses.replace(demo_model_config(), source=str(missing))
    with pytest.raises(ModelLoadError, match="does not exist") as error:
        Engine.load(config)
    assert str(missing) in str(error.value)


def test_a_folder_without_model_index_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a diffusers folder"):
        locate_source(str(tmp_path))


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ModelLoadError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_device("cuda:1")
