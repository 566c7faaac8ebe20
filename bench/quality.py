"""Image quality, FP8 against bf16: the same prompts and seeds, PSNR, SSIM and LPIPS.

    python -m bench.quality --weights /models/sd35-medium [--size 1024] [--steps 28]
    python -m bench.quality --weights demo --size 64 --steps 4      # the harness, on the demo

The bf16 replica makes every image first and is freed before the FP8 one loads, so only one
model is in memory at a time. PSNR and SSIM (Gaussian window 11, sigma 1.5, per RGB channel, as
Wang et al. 2004) are computed here with numpy; LPIPS (AlexNet) only when the ``lpips`` package
is importable, and is otherwise reported as unavailable. Real weights give the meaningful
figures; the demo's random weights only prove the harness runs.
"""

from __future__ import annotations

import argparse
import gc
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench import record

PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "a red fox in fresh snow, photograph, shallow depth of field",
    "an isometric city block at night with neon signs",
    "a bowl of ramen on a wooden table, studio lighting",
    "a watercolor map of an imaginary island",
    "portrait of an old sailor with a white beard, detailed",
    "a glass teapot with blooming tea, macro photograph",
    "a cat astronaut floating above the earth, digital art",
)
SEEDS = (0, 1)

Image = NDArray[np.uint8]


def psnr(a: Image, b: Image) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit images (inf when identical)."""
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def _gaussian_filter(image: NDArray[np.float64], sigma: float = 1.5, radius: int = 5) -> Any:
    """Separable Gaussian blur of a 2-D array, 'valid' region only (as SSIM's reference)."""
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def ssim(a: Image, b: Image) -> float:
    """Structural similarity of two 8-bit RGB (or gray) images, mean over channels."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    channels = a[..., None] if a.ndim == 2 else a
    other = b[..., None] if b.ndim == 2 else b
    scores = []
    for index in range(channels.shape[-1]):
        x = channels[..., index].astype(np.float64)
        y = other[..., index].astype(np.float64)
        mx, my = _gaussian_filter(x), _gaussian_filter(y)
        sxx = _gaussian_filter(x * x) - mx * mx
        syy = _gaussian_filter(y * y) - my * my
        sxy = _gaussian_filter(x * y) - mx * my
        numerator = (2 * mx * my + c1) * (2 * sxy + c2)
        denominator = (mx * mx + my * my + c1) * (sxx + syy + c2)
        scores.append(float(np.mean(numerator / denominator)))
    return float(np.mean(scores))


def lpips_scorer() -> tuple[Any, str]:
    """(score function or None, what was used or why not)."""
    try:
        import lpips
        import torch
    except ImportError:
        return None, "unavailable (the lpips package is not installed)"
    model = lpips.LPIPS(net="alex", verbose=False)

    def score(a: Image, b: Image) -> float:
        def tensor(image: Image) -> Any:
            return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1

        with torch.no_grad():
            return float(model(tensor(a), tensor(b)).item())

    return score, "lpips (AlexNet)"


def generate_all(
    weights: str, precision: str, prompts: Sequence[str], size: int, steps: int
) -> dict[str, Image]:
    """Every (prompt, seed) image from one replica, decoded to RGB arrays."""
    from PIL import Image as PILImage

    from engine.config import ModelConfig, PrecisionPolicy
    from engine.engine import Engine
    from engine.job import GenerationSpec

    config = ModelConfig("quality", source=weights, precision=PrecisionPolicy(precision))
    engine = Engine.load(config)
    images: dict[str, Image] = {}
    for index, prompt in enumerate(prompts):
        for seed in SEEDS:
            spec = GenerationSpec(
                model=config.id,
                prompt=prompt,
                negative_prompt="",
                width=size,
                height=size,
                steps=steps,
                guidance_scale=config.defaults.guidance_scale,
                seed=seed,
            )
            output = engine.generate(spec, lambda event: None, lambda: False)
            decoded = PILImage.open(io.BytesIO(output.images[0].data)).convert("RGB")
            images[f"prompt{index}-seed{seed}"] = np.asarray(decoded)
    del engine
    gc.collect()
    return images


def run(
    weights: str, prompts: Sequence[str], size: int, steps: int, out: Path, save: bool = False
) -> dict[str, Any]:
    bf16 = generate_all(weights, "bf16", prompts, size, steps)
    fp8 = generate_all(weights, "fp8", prompts, size, steps)
    score_lpips, lpips_used = lpips_scorer()
    pairs: dict[str, dict[str, float | None]] = {}
    for key, reference in bf16.items():
        pairs[key] = {
            "psnr_db": psnr(reference, fp8[key]),
            "ssim": ssim(reference, fp8[key]),
            "lpips": score_lpips(reference, fp8[key]) if score_lpips else None,
        }
    if save:
        from PIL import Image as PILImage

        folder = out / "quality"
        folder.mkdir(parents=True, exist_ok=True)
        for key in bf16:
            PILImage.fromarray(bf16[key]).save(folder / f"{key}-bf16.png")
            PILImage.fromarray(fp8[key]).save(folder / f"{key}-fp8.png")
    summary: dict[str, float | None] = {}
    for metric in ("psnr_db", "ssim", "lpips"):
        values = [float(v) for p in pairs.values() if (v := p[metric]) is not None]
        summary[metric] = record.median(values) if values else None
    results = {"pairs": pairs, "median": summary, "lpips": lpips_used}
    rows = [("metric (FP8 vs bf16, same seeds)", "median", "min", "max")]
    for metric, label in (("psnr_db", "PSNR dB"), ("ssim", "SSIM"), ("lpips", "LPIPS")):
        values = [float(v) for p in pairs.values() if (v := p[metric]) is not None]
        if not values:
            rows.append((label, lpips_used, "", ""))
            continue
        rows.append(
            (label, f"{record.median(values):.4f}", f"{min(values):.4f}", f"{max(values):.4f}")
        )
    print(
        f"{weights}: {len(pairs)} images ({len(prompts)} prompts x {len(SEEDS)} seeds), "
        f"{size}x{size}, {steps} steps"
    )
    print(record.table(rows))
    settings = {
        "weights": weights,
        "prompts": list(prompts),
        "seeds": list(SEEDS),
        "size": size,
        "steps": steps,
    }
    print(f"record: {record.write('quality', settings, results, out)}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="a local diffusers folder, or demo")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many prompts")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--save-images", action="store_true", help="PNGs under out/quality/")
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.weights, PROMPTS[: args.prompts], args.size, args.steps, args.out, args.save_images)


if __name__ == "__main__":
    main()
