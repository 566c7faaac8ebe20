"""The GPU benchmark's CPU form: tiny transformer, CPU device, no NVML -> the CPU inventory."""

from __future__ import annotations

import json

import pytest
import torch

from bench import gpu


def test_gpu_benchmark_cpu_form_measures_packs_and_counts_images(tmp_path, capsys):
    gpu.main(
        [
            "--arch",
            "tiny",
            "--device",
            "cpu",
            "--size",
            "64",
            "--steps",
            "2",
            "--runs",
            "1",
            "--images",
            "1",
            "--max-replicas",
            "1",
            "--compile",
            "off",  # the compiled rows are the same code path plus torch.compile: on the GPU
            "--out",
            str(tmp_path),
        ]
    )

    output = capsys.readouterr().out
    assert "memory readings: CPU inventory" in output
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["results"]["memory_source"].startswith("CPU inventory")
    by_precision = saved["results"]["models"]["arch:tiny"]
    assert set(by_precision) == {"bf16", "fp8-weight-only", "fp8"}
    for found in by_precision.values():
        assert found["unit"] == "step"
        assert found["latency_median_s"] > 0
        assert found["footprint_bytes"] > 0  # the replica's RSS, read by the CPU inventory
        assert found["replicas_packed"] >= 1
        assert found["replicas_run_side_by_side"] == 1
        assert found["images_per_minute"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_gpu_benchmark_on_cuda_says_clearly_when_there_is_none():
    with pytest.raises(SystemExit, match="CUDA is not available"):
        gpu.main(["--arch", "tiny"])


def test_each_precision_runs_uncompiled_compiled_or_both():
    assert gpu.variants(("bf16", "fp8"), "both") == ["bf16", "bf16+compile", "fp8", "fp8+compile"]
    assert gpu.variants(("bf16",), "on") == ["bf16+compile"]
    assert gpu.variants(("bf16",), "off") == ["bf16"]
