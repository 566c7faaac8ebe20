"""FP8 (E4M3) weights through optimum-quanto: every quanto call of the engine lives here.

Legacy: the engine's FP8 is torchao's (engine/fp8_torchao.py). quanto stays only to read
folders written by the older ``pointillist quantize`` (format 1, engine/fp8_checkpoint.py), and
``quantize_fp8`` only for the tests that write such a folder. Weight-byte counting here covers
both libraries' tensors. diffusers marks its own quanto integration deprecated (to go in
diffusers 1.0), and quanto's API has moved between releases, so the rest of the engine only sees
the few functions below.

What this is, honestly: quanto's ``qfloat8`` is weight-only. Linear (and Conv2d) weights are
stored as float8_e4m3fn data plus one scale per output channel, and every matmul dequantizes
them to the activation dtype (bf16) first. It halves weight memory; it does not use FP8 tensor
cores and does not make a step faster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from optimum.quanto import freeze, qfloat8, quantization_map, quantize, requantize
from optimum.quanto.nn import QModuleMixin
from optimum.quanto.tensor import QTensor
from optimum.quanto.tensor.weights import WeightQBytesTensor

from engine import fp8_torchao

FP8_DTYPE = torch.float8_e4m3fn
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def quantize_fp8(module: torch.nn.Module) -> None:
    """Quantizes every Linear/Conv2d weight of ``module`` to FP8 in place, then freezes it.

    Freezing replaces the float weights by the FP8 tensors; without it quanto would keep the
    16-bit weights and re-quantize them at every forward pass.
    """
    quantize(module, weights=qfloat8)
    freeze(module)


def is_fp8_quantized(module: torch.nn.Module) -> bool:
    """True when at least one weight of ``module`` is stored as a quanto FP8 tensor."""
    return any(is_fp8_weight(sub.weight) for sub in _quantized_submodules(module))


def is_fp8_weight(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` is a frozen quanto weight holding float8_e4m3fn data."""
    return isinstance(tensor, WeightQBytesTensor) and tensor._data.dtype == FP8_DTYPE


def weight_storage_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype the bytes of ``tensor`` are stored in (float8_e4m3fn for an FP8 weight).

    A quanto tensor reports its scale's dtype (bf16) as ``dtype``; the data it holds is FP8.
    """
    if isinstance(tensor, QTensor):
        return tensor._data.dtype
    if fp8_torchao.is_fp8_weight(tensor):
        return fp8_torchao.FP8_DTYPE
    return tensor.dtype


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes ``module`` really stores: parameters and buffers, FP8 data and scales counted apart.

    ``numel() * element_size()`` of a quanto tensor would count it at its nominal (bf16) dtype,
    so quantized tensors (quanto's and torchao's) are measured through their inner tensors.
    """
    # parameters() and buffers() yield shared tensors once (T5 ties its input embedding).
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(_tensor_bytes(tensor) for tensor in tensors)


def fp8_quantization_map(module: torch.nn.Module) -> dict[str, dict[str, str]]:
    """quanto's map of which submodule holds which qtype, saved beside an FP8 state dict."""
    return quantization_map(module)


def requantize_fp8(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    qmap: Mapping[str, Mapping[str, str]],
    compute_dtype: torch.dtype,
) -> None:
    """Fills ``module`` (built on the meta device) with a saved FP8 state dict, on the CPU.

    quanto's ``requantize`` swaps the mapped submodules for their quantized versions (still
    empty), materializes everything on the CPU and loads the FP8 data and scales, so the 16-bit
    weights never exist. Before that, every meta parameter takes the dtype it was saved in: a
    meta model is built in float32, and transformers keeps T5's ``wo`` layers in float32 in an
    fp16 model, so only the file knows each tensor's dtype. Saved 16-bit tensors (scales
    included) are converted to ``compute_dtype`` first, so a bf16 folder also runs on a device
    with fp16 only; float32 ones stay float32.
    """
    # A new dict: requantize pops the FP8 entries it consumes, the caller's dict stays whole.
    state = {
        key: tensor.to(compute_dtype) if tensor.dtype in _SIXTEEN_BIT else tensor
        for key, tensor in state_dict.items()
    }
    _match_saved_dtypes(module, state)
    requantize(module, state, dict(qmap), device=torch.device("cpu"))
    leftovers = [name for name, param in module.named_parameters() if param.device.type == "meta"]
    if leftovers:
        raise ValueError(f"the FP8 state dict has no values for {', '.join(leftovers[:5])}")


def move_to_device(module: torch.nn.Module, device: torch.device) -> None:
    """Moves a module holding FP8 weights to ``device`` without switching quanto's kernels.

    On CUDA (compute capability >= 8.0), moving a quanto FP8 weight with ``.to()`` turns it
    into a Marlin FP8 tensor when the shapes allow: that kernel is compiled with nvcc at first
    use and has been reported to produce noisy images (diffusers #10302, #11540). Rebuilding
    each weight as a plain ``WeightQBytesTensor`` on the device keeps the
    dequantize-then-bf16-matmul path everywhere.
    """
    for sub in _quantized_submodules(module):
        weight = sub.weight
        if type(weight) is not WeightQBytesTensor or weight.device == device:
            continue
        moved = WeightQBytesTensor(
            weight.qtype,
            weight.axis,
            weight.size(),
            weight.stride(),
            weight._data.to(device),
            weight._scale.to(device),
            weight.activation_qtype,
        )
        sub.weight = torch.nn.Parameter(moved, requires_grad=False)
    # Everything else (biases, norms, buffers) moves normally; weights already there stay put.
    module.to(device)


def _quantized_submodules(module: torch.nn.Module) -> list[Any]:
    # Any: quanto ships no type information.
    return [sub for sub in module.modules() if isinstance(sub, QModuleMixin)]


def _tensor_bytes(tensor: torch.Tensor) -> int:
    torchao_bytes = fp8_torchao.tensor_bytes(tensor)
    if torchao_bytes is not None:
        return torchao_bytes
    if isinstance(tensor, QTensor):
        inner_names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in inner_names)
    return tensor.numel() * tensor.element_size()


def _match_saved_dtypes(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    for prefix, sub in module.named_modules():
        base = f"{prefix}." if prefix else ""
        for name, param in list(sub.named_parameters(recurse=False)):
            saved = state_dict.get(base + name)
            if saved is None:
                # A quantized weight is saved as ``<name>._data`` + ``<name>._scale``; the
                # module computes in the scale's dtype.
                saved = state_dict.get(f"{base}{name}._scale")
            if saved is not None and saved.dtype != param.dtype:
                setattr(sub, name, torch.nn.Parameter(param.to(saved.dtype), requires_grad=False))
        for name, buffer in list(sub.named_buffers(recurse=False)):
            saved = state_dict.get(base + name)
            if saved is not None and buffer is not None and saved.dtype != buffer.dtype:
                setattr(sub, name, buffer.to(saved.dtype))
