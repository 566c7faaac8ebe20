"""Makes a sample's result independent of what it is batched with, bit for bit.

Dynamic batching promises each caller the image it would get alone. On CPUs, several kernels
compute a row differently depending on the batch around it (the measured causes are listed in
``make_batch_invariant``); this module removes each cause in the transformer's layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers.models import activations

# Fewest rows a transformer Linear runs on. Measured on MKL 2024.2 and oneDNN 3.12 (torch 2.13,
# AVX-512): fp32 rows agree from 12 rows on, bf16 from 3.
MIN_GEMM_ROWS = 16


def make_batch_invariant(module: torch.nn.Module, min_rows: int = MIN_GEMM_ROWS) -> None:
    """Makes the layers of ``module`` compute a sample the same way whatever else it is batched
    with, where they would not by themselves.

    Measured causes (MKL and oneDNN, torch 2.11 and 2.13, AVX-512, AMD and Intel CPUs):

    - A Linear's row count: with few rows (the conditioning path has one row per image and
      guidance branch) MKL (fp32) and oneDNN (bf16, at SD3.5's widths) take other kernels for 1,
      2 or 3 rows than for 16. Short inputs are padded with zero rows and the result cut back.
    - A Linear's input layout: ``F.linear`` fuses the bias into the matmul for a contiguous 3-D
      input but adds it afterwards for a strided one, and SD3's joint attention hands its output
      Linears a slice that is contiguous for a batch of one and strided for more. Inputs are
      flattened to one contiguous 2-D matrix first.
    - A Conv2d's batch size: oneDNN's fp32 convolution (SD3's patch embedding, 16 channels in)
      rounds a batch of one differently from larger ones.
    - An activation's element count: GELU's tanh is vectorized, and where the element range is
      split across threads (by its total size) the leftovers of each split take a scalar tanh
      that rounds differently (fp32, 16 threads, torch 2.11).

    Convolutions and activations therefore run one sample at a time. Costs a copy of strided
    Linear inputs, a few zero rows for tiny ones, and one call per image instead of one per
    batch for the patch embedding and the activations. Patches each module once; quanto's FP8
    QLinear and QConv2d are a Linear and a Conv2d too.
    """
    for sub in module.modules():
        if isinstance(sub.forward, _InvariantForward | _PerSampleForward):
            continue
        # An instance attribute shadows the class's forward; nn.Module.__call__ calls it.
        if isinstance(sub, torch.nn.Linear):
            sub.forward = _InvariantForward(sub.forward, min_rows)  # type: ignore[method-assign]
        elif isinstance(sub, _PER_SAMPLE):
            sub.forward = _PerSampleForward(sub.forward)  # type: ignore[method-assign]


_PER_SAMPLE = (
    torch.nn.Conv2d,
    torch.nn.GELU,
    torch.nn.SiLU,
    activations.GELU,
    activations.GEGLU,
    activations.ApproximateGELU,
    activations.SwiGLU,
    activations.FP32SiLU,
)


class _InvariantForward:
    """A Linear's forward on a contiguous 2-D input of at least ``min_rows`` rows."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], min_rows: int) -> None:
        self.forward = forward
        self.min_rows = min_rows

    def __call__(self, input: torch.Tensor) -> torch.Tensor:  # Linear.forward's own name
        width = input.shape[-1]
        flat = input.reshape(-1, width).contiguous()
        rows = flat.shape[0]
        if 0 < rows < self.min_rows:
            flat = torch.cat([flat, flat.new_zeros(self.min_rows - rows, width)])
        out = self.forward(flat)[:rows]
        return out.reshape(*input.shape[:-1], out.shape[-1])


class _PerSampleForward:
    """A module's forward run on one sample (first dimension) of its input at a time."""

    def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
        self.forward = forward

    def __call__(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if input.dim() < 2 or input.shape[0] <= 1:
            return self.forward(input, *args, **kwargs)
        return torch.cat([self.forward(sample, *args, **kwargs) for sample in input.split(1)])
