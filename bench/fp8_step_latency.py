"""FP8 against bf16 on a full-size SD3.5 transformer: weight bytes and one denoising step.

FP8 is torchao's, in the mode the engine's policy picks for the device (``fp8_mode``): W8A8 on
CUDA compute capability >= 8.9, weight-only elsewhere (the CPU included).

The transformer is built from its published architecture with random weights (no download),
so the figures hold for the real model's shapes, not its outputs. One step runs with
classifier-free guidance (batch 2), with 77 CLIP + 256 T5 text tokens.

    python -m bench.fp8_step_latency --arch medium --size 256             # this CPU
    python -m bench.fp8_step_latency --arch medium large --size 1024 --device cuda
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

import torch
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel

from bench import record
from engine import fp8, fp8_torchao

# From the published transformer configs of stabilityai/stable-diffusion-3.5-{medium,large}.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "medium": {
        "num_layers": 24,
        "num_attention_heads": 24,
        "caption_projection_dim": 1536,
        "pos_embed_max_size": 384,
        "dual_attention_layers": tuple(range(13)),
    },
    "large": {
        "num_layers": 38,
        "num_attention_heads": 38,
        "caption_projection_dim": 2432,
        "pos_embed_max_size": 192,
        "dual_attention_layers": (),
    },
    # Not SD3.5: two small layers with SD3's text widths, for the smoke tests' quick runs.
    "tiny": {
        "num_layers": 2,
        "num_attention_heads": 2,
        "caption_projection_dim": 128,
        "pos_embed_max_size": 32,
        "dual_attention_layers": (),
    },
}
SHARED = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "attention_head_dim": 64,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 2048,
    "qk_norm": "rms_norm",
}
TEXT_TOKENS = 77 + 256


def build(arch: str) -> torch.nn.Module:
    """The architecture with random bf16 weights on the CPU (quantization happens there too,
    as in the engine, so a GPU never holds both copies)."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model: torch.nn.Module = SD3Transformer2DModel(**SHARED, **ARCHITECTURES[arch])
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def step_inputs(size: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latent = size // 8

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    return {
        "hidden_states": noise(2, 16, latent, latent),
        "encoder_hidden_states": noise(2, TEXT_TOKENS, 4096),
        "pooled_projections": noise(2, 2048),
        "timestep": torch.tensor([500.0, 500.0], device=device),
    }


def time_steps(model: torch.nn.Module, inputs: dict[str, torch.Tensor], runs: int) -> list[float]:
    device = inputs["hidden_states"].device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    samples = []
    with torch.inference_mode():
        model(**inputs, return_dict=False)  # warm-up: kernels, caches, allocator
        sync()
        for _ in range(runs):
            started = time.perf_counter()
            model(**inputs, return_dict=False)
            sync()
            samples.append(time.perf_counter() - started)
    return samples


def fp8_mode(device: torch.device) -> fp8_torchao.Fp8Mode:
    """The torchao mode the engine's precision policy gives the transformer on ``device``."""
    from engine.precision import detect_capability, fp8_modes

    modes, _ = fp8_modes(detect_capability(device))
    return dict(modes)["transformer"]


def measure(arch: str, sizes: list[int], device: torch.device, runs: int) -> dict[str, Any]:
    model = build(arch)
    parameters = sum(p.numel() for p in model.parameters())
    result: dict[str, Any] = {
        "parameters": parameters,
        "bf16_weight_bytes": fp8.weight_bytes(model),
    }
    model.to(device)
    result["bf16_step_s"] = {
        size: time_steps(model, step_inputs(size, device), runs) for size in sizes
    }
    model.to("cpu")
    mode = fp8_mode(device)
    result["fp8_mode"] = mode.value
    fp8_torchao.quantize_fp8(model, mode)  # on the CPU, as the engine does
    result["fp8_weight_bytes"] = fp8.weight_bytes(model)
    model.to(device)
    result["fp8_step_s"] = {
        size: time_steps(model, step_inputs(size, device), runs) for size in sizes
    }
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run(
    archs: list[str], sizes: list[int], device_name: str, runs: int, out: Path
) -> dict[str, Any]:
    device = torch.device(device_name)
    results = {arch: measure(arch, sizes, device, runs) for arch in archs}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [
        (
            "arch",
            "params",
            "bf16 GB",
            "fp8 GB",
            "fp8/bf16",
            "size",
            "bf16 step s",
            "fp8 step s",
            "fp8/bf16",
        )
    ]
    for arch, found in results.items():
        for size in sizes:
            bf16_s = record.median(found["bf16_step_s"][size])
            fp8_s = record.median(found["fp8_step_s"][size])
            rows.append(
                (
                    arch,
                    f"{found['parameters'] / 1e9:.2f}B",
                    f"{found['bf16_weight_bytes'] / 1e9:.2f}",
                    f"{found['fp8_weight_bytes'] / 1e9:.2f}",
                    f"{found['fp8_weight_bytes'] / found['bf16_weight_bytes']:.2f}",
                    str(size),
                    f"{bf16_s:.4f}",
                    f"{fp8_s:.4f}",
                    f"{fp8_s / bf16_s:.2f}",
                )
            )
    print(f"device: {name}; median of {runs} steps with guidance (batch 2)")
    print(record.table(rows))
    settings = {"archs": archs, "sizes": sizes, "device": name, "runs": runs}
    print(f"record: {record.write('fp8_step_latency', settings, results, out)}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", choices=sorted(ARCHITECTURES), default=["medium"])
    parser.add_argument("--size", nargs="+", type=int, default=[256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    args = parser.parse_args(argv)
    run(args.arch, args.size, args.device, args.runs, args.out)


if __name__ == "__main__":
    main()
