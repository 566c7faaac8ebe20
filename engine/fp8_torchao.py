"""FP8 (E4M3) through torchao: every torchao call of the engine lives here.

Two modes, chosen by the precision policy (engine/precision.py), never here:

- ``weight_only``: Linear weights stored as float8_e4m3fn plus one scale per output row; every
  matmul dequantizes them to the activation dtype (bf16). It halves weight memory and makes
  no step faster (on the CPU it is slower than bf16). Runs everywhere.
- ``dynamic_row`` / ``dynamic_tensor`` (W8A8): weights stored in FP8 and each activation
  quantized to FP8 at run time, so the matmul itself runs on FP8 tensor cores
  (``torch._scaled_mm``, bf16 output). torchao refuses it without CUDA compute capability >= 8.9.

Only ``torch.nn.Linear`` layers are quantized (torchao's default filter): the VAE's and the
transformer's patch-embedding convolutions stay 16-bit.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import torch

FP8_DTYPE = torch.float8_e4m3fn


class Fp8Mode(enum.Enum):
    """How FP8 is applied to a component's Linear layers."""

    WEIGHT_ONLY = "weight_only"
    DYNAMIC_ROW = "dynamic_row"
    DYNAMIC_TENSOR = "dynamic_tensor"

    @property
    def fp8_matmul(self) -> bool:
        """True when activations are FP8 too, so the matmul runs in FP8."""
        return self is not Fp8Mode.WEIGHT_ONLY


def quantize_fp8(module: torch.nn.Module, mode: Fp8Mode) -> None:
    """Quantizes every Linear weight of ``module`` to FP8 in place (on whatever device it is)."""
    config = _config(mode)
    _quantize_(module, config)


def is_fp8_quantized(module: torch.nn.Module) -> bool:
    """True when at least one weight of ``module`` is a torchao FP8 tensor."""
    return any(is_fp8_weight(param) for param in module.parameters())


def is_fp8_weight(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` is a torchao ``Float8Tensor`` holding float8_e4m3fn data."""
    float8_tensor = _float8_tensor_type()
    # Any: torchao's tensor subclass carries no type information for its fields.
    quantized: Any = tensor
    return isinstance(tensor, float8_tensor) and quantized.qdata.dtype == FP8_DTYPE


def fp8_matmul(module: torch.nn.Module) -> bool:
    """True when the module's FP8 weights also quantize their activations (W8A8)."""
    return any(
        is_fp8_weight(param) and getattr(param, "act_quant_kwargs", None) is not None
        for param in module.parameters()
    )


def tensor_bytes(tensor: torch.Tensor) -> int | None:
    """Bytes a torchao FP8 tensor really stores (data and scales), or None for other tensors.

    ``numel() * element_size()`` of a wrapper tensor counts it at its nominal dtype.
    """
    if not isinstance(tensor, _float8_tensor_type()):
        return None
    quantized: Any = tensor
    inner_names, _ = quantized.__tensor_flatten__()
    return sum(
        getattr(tensor, name).numel() * getattr(tensor, name).element_size() for name in inner_names
    )


def requantize_fp8(module: torch.nn.Module, mode: Fp8Mode) -> int:
    """Turns the FP8 weights of ``module`` into ``mode``, one Linear layer at a time.

    A checkpoint stores weight-only FP8 (the only mode torchao builds on the CPU). For W8A8 each
    weight is dequantized to its 16-bit dtype and quantized again with the dynamic config, so
    at most one layer's 16-bit weight exists at a time. Returns how many layers changed.
    """
    config = _config(mode)
    changed = 0
    for linear in module.modules():
        weight = getattr(linear, "weight", None)
        if not isinstance(linear, torch.nn.Linear) or weight is None or not is_fp8_weight(weight):
            continue
        current: Any = weight
        if (current.act_quant_kwargs is not None) == mode.fp8_matmul:
            continue
        linear.weight = torch.nn.Parameter(current.dequantize(), requires_grad=False)
        _quantize_(linear, config)
        changed += 1
    return changed


def flatten_state_dict(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors and safetensors metadata for a state dict holding torchao FP8 tensors.

    Each ``Float8Tensor`` becomes its inner tensors (``<module>._weight_qdata``,
    ``<module>._weight_scale``) plus a JSON description in the metadata; torchao's safetensors
    support (``torchao.prototype.safetensors``, what diffusers and transformers call) does it.
    """
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    tensors, metadata = flatten_tensor_state_dict(state)
    return tensors, metadata


def unflatten_state_dict(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> dict[str, torch.Tensor]:
    """The state dict ``flatten_state_dict`` wrote, with its ``Float8Tensor`` weights rebuilt.

    Raises ValueError when tensors the metadata names are missing or left over.
    """
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    if leftover:
        raise ValueError(f"tensors no metadata describes: {', '.join(sorted(leftover)[:5])}")
    names = set(json.loads(metadata["tensor_names"]))
    if set(state) != names:
        raise ValueError(f"tensors missing: {', '.join(sorted(names - set(state))[:5])}")
    return dict(state)


def _config(mode: Fp8Mode) -> object:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        PerRow,
        PerTensor,
    )

    if mode is Fp8Mode.WEIGHT_ONLY:
        return Float8WeightOnlyConfig(weight_dtype=FP8_DTYPE)
    granularity = PerRow() if mode is Fp8Mode.DYNAMIC_ROW else PerTensor()
    return Float8DynamicActivationFloat8WeightConfig(
        activation_dtype=FP8_DTYPE, weight_dtype=FP8_DTYPE, granularity=granularity
    )


def _quantize_(module: torch.nn.Module, config: object) -> None:
    from torchao.quantization import quantize_

    quantize_(module, config)


def _float8_tensor_type() -> type:
    from torchao.quantization import Float8Tensor

    return Float8Tensor
