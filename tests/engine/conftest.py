"""Shared engines for the engine tests: each demo engine is loaded once per session (~0.2 s)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.config import PrecisionPolicy, demo_model_config
from engine.demo import build_demo_pipeline
from engine.engine import Engine
from engine.job import GenerationSpec

SpecFactory = Callable[..., GenerationSpec]


def load_demo(precision: PrecisionPolicy, **overrides: Any) -> Engine:
    """The demo model on the CPU in the given precision."""
    config = dataclasses.replace(
        demo_model_config(), precision=precision, device="cpu", **overrides
    )
    return Engine.load(config)


@pytest.fixture(scope="session")
def bf16_engine() -> Engine:
    # ``auto`` on the CPU resolves to bf16.
    return load_demo(PrecisionPolicy.AUTO)


@pytest.fixture(scope="session")
def fp8_engine() -> Engine:
    return load_demo(PrecisionPolicy.FP8)


@pytest.fixture(scope="session")
def fp32_engine() -> Engine:
    return load_demo(PrecisionPolicy.FP32)


@pytest.fixture(scope="session")
def saved_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline as ``save_pretrained`` writes it (float32), like any local folder."""
    folder = tmp_path_factory.mktemp("saved") / "demo-pipeline"
    build_demo_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture
def make_spec() -> SpecFactory:
    """Small, fast specs (64x64, 4 steps) unless a test asks for more."""

    def make(**overrides: Any) -> GenerationSpec:
        values: dict[str, Any] = {
            "model": "demo",
            "prompt": "a lighthouse at dusk",
            "negative_prompt": "blurry",
            "width": 64,
            "height": 64,
            "steps": 4,
            "guidance_scale": 4.5,
            "seed": 1234,
        }
        values.update(overrides)
        return GenerationSpec(**values)

    return make


@contextmanager
def transformer_batches(engine: Engine) -> Iterator[list[int]]:
    """Records the batch size of every transformer call (one per denoising step) while open."""
    sizes: list[int] = []

    def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sizes.append(int(kwargs["hidden_states"].shape[0]))

    handle = engine.pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()
