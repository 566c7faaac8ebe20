"""Benchmarks are not tests; a tiny run of each is, so they never rot."""

from __future__ import annotations

import json

from bench import fp8_weight_bytes, server_overhead


def test_server_overhead_runs_and_records(tmp_path):
    results = server_overhead.run(runs=2, steps=2, size=64, out=tmp_path)

    assert len(results["server_samples_s"]) == len(results["in_process_samples_s"]) == 2
    assert results["ratio_of_medians"] > 0
    saved = json.loads((tmp_path / "server_overhead.json").read_text())
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
    assert "torch" in saved["versions"]


def test_fp8_weight_bytes_shows_the_transformer_smaller_in_fp8(tmp_path):
    sizes = fp8_weight_bytes.run(out=tmp_path)

    assert sizes["fp8"]["transformer"] < sizes["bf16"]["transformer"]
    assert sizes["fp8"]["vae"] == sizes["bf16"]["vae"]  # the VAE stays 16-bit
    assert (tmp_path / "fp8_weight_bytes.json").exists()
