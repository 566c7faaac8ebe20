"""Drops the log lines importing torchao prints on every machine, which say nothing actionable.

- torchao's ``Failed to load .../_C_mxfp8...so`` / ``_C_cutlass_90a`` warnings: optional
  CUDA-only kernel libraries (MX formats, CUTLASS on Hopper) that FP8 E4M3 here does not use;
  on the CPU they never load.
- torchao's ``Detected no triton`` (its int8 matmul kernels, which FP8 does not use; the CPU
  build of torch has no Triton).
- torch's pytree warning that torchao registers Enum subclasses (``KernelPreference``...) as
  pytree constants, a deprecation meant for torchao's developers.
- diffusers' ``Unable to import `torchao` Tensor objects``: its torchao quantizer looks for
  tensor classes torchao 0.18 no longer has (NF4, uintx). The engine does not load through
  diffusers' quantizer; it reads torchao's safetensors itself (engine/fp8_checkpoint.py).

Each worker and ``pointillist quantize`` would print them once per process. Only those records
are dropped (a filter on each logger, matched by text): torchao's other warnings still show.
Torch-free and cheap, so ``engine/__init__.py`` installs it before anything imports torchao
(transformers imports it on its own when installed).
"""

from __future__ import annotations

import logging

_DROPPED = (
    ("torchao", ("Failed to load", "_C_")),
    ("torchao.kernel.intmm", ("Detected no triton",)),
    ("torch.utils._pytree", ("is an Enum subclass", "register_constant")),
    ("diffusers.quantizers.torchao.torchao_quantizer", ("Unable to import `torchao` Tensor",)),
)


class _DropRecords(logging.Filter):
    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        return not all(needle in message for needle in self.needles)


def quiet_torchao_import() -> None:
    """Installs the filters (once per logger, however often it is called)."""
    for name, needles in _DROPPED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRecords) for f in logger.filters):
            logger.addFilter(_DropRecords(needles))
