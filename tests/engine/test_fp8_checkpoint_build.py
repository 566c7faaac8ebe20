"""How an FP8 checkpoint's module is built before its weights are filled in: on the meta device
entirely when the file holds every buffer, with real computed buffers when it does not."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from engine.fp8_checkpoint import _build_empty


class _WithBuffers(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)
        self.register_buffer("saved_grid", torch.arange(width, dtype=torch.float32))
        self.register_buffer("computed", torch.full((width,), 7.0), persistent=False)


def test_builds_on_meta_when_the_file_holds_every_buffer(tmp_path):
    _WithBuffers().save_config(tmp_path)
    saved = {"linear.weight", "linear.bias", "saved_grid", "computed"}

    module: Any = _build_empty(_WithBuffers, tmp_path, saved)

    assert module.linear.weight.device.type == "meta"
    assert module.saved_grid.device.type == "meta"  # never computed: the file has it


def test_keeps_computed_buffers_real_when_the_file_lacks_them(tmp_path):
    _WithBuffers().save_config(tmp_path)
    saved = {"linear.weight", "linear.bias", "saved_grid"}  # "computed" is not persistent

    module: Any = _build_empty(_WithBuffers, tmp_path, saved)

    assert module.linear.weight.device.type == "meta"
    assert torch.equal(module.computed, torch.full((4,), 7.0))
