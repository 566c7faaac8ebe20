"""The quality harness on the demo model, and its PSNR and SSIM against known cases."""

from __future__ import annotations

import json
import math

import numpy as np

from bench import quality


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_psnr_and_ssim_of_identical_and_different_images():
    a = _image(0)
    offsets = np.random.default_rng(1).integers(-8, 9, a.shape)
    noisy = np.clip(a.astype(int) + offsets, 0, 255).astype(np.uint8)

    assert math.isinf(quality.psnr(a, a))
    assert quality.ssim(a, a) == 1.0
    assert 25 < quality.psnr(a, noisy) < 40
    assert quality.ssim(a, noisy) < quality.ssim(a, a)
    assert quality.ssim(a, _image(2)) < 0.1  # unrelated noise shares no structure


def test_psnr_of_a_constant_offset():
    a = np.full((8, 8, 3), 100, dtype=np.uint8)
    b = a + 10  # error 10 everywhere: 20 log10(255 / 10) dB

    assert quality.psnr(a, b) == 20 * math.log10(25.5)


def test_quality_harness_compares_fp8_with_bf16_on_the_demo(tmp_path, capsys):
    results = quality.run("demo", quality.PROMPTS[:2], size=64, steps=2, out=tmp_path)

    assert len(results["pairs"]) == 2 * len(quality.SEEDS)
    for pair in results["pairs"].values():
        assert pair["psnr_db"] > 0
        assert -1 <= pair["ssim"] <= 1
    if results["median"]["lpips"] is None:
        assert "unavailable" in results["lpips"]
    assert "PSNR dB" in capsys.readouterr().out
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["settings"]["weights"] == "demo"
