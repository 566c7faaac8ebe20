"""What one replica of a model should hold on a GPU before any replica was measured: an estimate.

``pointillist plan`` plans with it (unless ``--footprint`` gives the bytes), and the running fleet
places a model's first replica with it until that replica's measurement replaces it, so that the
two place the same way. The estimate adds weight bytes from the SD3.5 parameter counts
(transformer: Large 8.06B, Medium 2.24B; T5-XXL 4.76B of which 0.13B embedding; CLIP-G 0.69B;
CLIP-L 0.12B; VAE 0.08B) at the precision policy (FP8: the transformer and T5's linear layers at
1 byte per parameter, everything else 16-bit, plus the transformer's 16-bit positional-embedding
buffer: 0.45 GB Medium, 0.18 GB Large), then ``RUNTIME_GIB`` for the CUDA context and the
activations of a 1024x1024 image with CFG (the VAE decode dominates). That gives about 11.7 GiB
for SD3.5 Medium in FP8 and 16.9 GiB for Large (18.1 / 28.7 GiB in bf16). The size is read from
the model's source: "large" or "medium" in it (case-insensitive); otherwise Large is assumed. The
``demo`` model is counted as ``DEMO_GIB``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import DEMO_SOURCE, ModelConfig, PrecisionPolicy

GIB = 1 << 30
GB = 10**9
RUNTIME_GIB = 3.0
"""CUDA context (~0.5 GiB) + activations at 1024x1024 with CFG (~2.5 GiB, VAE decode): estimated."""
DEMO_GIB = 1.0
"""The demo model's tiny pipeline: what a worker process holds is mostly the runtime itself."""

TRANSFORMER_PARAMS = {"large": 8.06e9, "medium": 2.24e9}
TRANSFORMER_BUFFER_BYTES = {"large": 0.18e9, "medium": 0.45e9}
T5_LINEAR_PARAMS = 4.63e9
SIXTEEN_BIT_PARAMS = 0.13e9 + 0.69e9 + 0.12e9 + 0.08e9  # T5 embedding, CLIP-G, CLIP-L, VAE


@dataclass(frozen=True)
class FootprintEstimate:
    bytes: int
    reason: str


def estimate_footprint(model: ModelConfig) -> FootprintEstimate:
    """What one replica of ``model`` holds on a GPU, estimated (see the module docstring)."""
    if model.source == DEMO_SOURCE:
        return FootprintEstimate(round(DEMO_GIB * GIB), "estimate: demo model")
    lowered = model.source.lower()
    size = "large" if "large" in lowered else "medium" if "medium" in lowered else None
    assumed = size is None
    size = size or "large"
    precision = model.precision
    fp8 = precision in (PrecisionPolicy.FP8, PrecisionPolicy.AUTO)
    quantizable = TRANSFORMER_PARAMS[size] + T5_LINEAR_PARAMS
    if fp8:
        weights = quantizable + 2 * SIXTEEN_BIT_PARAMS
    else:
        per_param = 4 if precision == PrecisionPolicy.FP32 else 2
        weights = per_param * (quantizable + SIXTEEN_BIT_PARAMS)
    weights += TRANSFORMER_BUFFER_BYTES[size]
    total = round(weights + RUNTIME_GIB * GIB)
    label = "FP8" if fp8 else str(precision.value)
    reason = f"estimate: SD3.5 {size.capitalize()}, {label}"
    if assumed:
        reason += " (size not in the source's name: Large assumed)"
    return FootprintEstimate(total, reason)
