"""Importing the engine's FP8 code prints none of torchao's import-time noise."""

from __future__ import annotations

import subprocess
import sys

NOISE = ("Failed to load", "register_constant", "Unable to import `torchao`", "Detected no triton")


def test_importing_torchao_through_the_engine_is_quiet() -> None:
    # A fresh interpreter: torchao prints at its first import only. Logging is configured at
    # INFO, as a worker does, so a filtered record would show if it got through.
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "import engine.fp8_torchao, torch\n"
        "import torchao.quantization, torchao.kernel.intmm\n"
        "import diffusers.quantizers.torchao.torchao_quantizer\n"
        "linear = torch.nn.Linear(8, 8)\n"
        "engine.fp8_torchao.quantize_fp8(linear, engine.fp8_torchao.Fp8Mode.WEIGHT_ONLY)\n"
        "print('quantized', engine.fp8_torchao.is_fp8_weight(linear.weight))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert "quantized True" in done.stdout
    for needle in NOISE:
        assert needle not in done.stderr, done.stderr


def test_other_torchao_warnings_still_show() -> None:
    import logging

    from engine import import_noise

    import_noise.quiet_torchao_import()
    logger = logging.getLogger("torchao")
    record = logger.makeRecord("torchao", logging.WARNING, __file__, 1, "a real problem", (), None)
    assert logger.filter(record)
    noise = logger.makeRecord(
        "torchao", logging.WARNING, __file__, 1, "Failed to load %s: x", ("/x/_C_mxfp8.so",), None
    )
    assert not logger.filter(noise)
