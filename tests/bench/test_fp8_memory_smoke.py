"""A tiny run of the FP8 memory benchmark: the real save, quantize and load paths, in children."""

from __future__ import annotations

import json

import pytest

from bench import fp8_memory


def test_fp8_memory_measures_three_loads_and_cleans_up(tmp_path, capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    results = fp8_memory.run("tiny", ["medium"], out=tmp_path, workdir=scratch)

    loads = results["loads"]
    assert set(loads) == {"bf16", "quantize-at-load", "fp8-checkpoint"}
    assert loads["bf16"]["transformer_fp8"] is False
    assert loads["quantize-at-load"]["transformer_fp8"] is True
    assert loads["fp8-checkpoint"]["transformer_fp8"] is True
    for found in loads.values():
        assert found["peak_rss_bytes"] >= found["resident_rss_bytes"] > found["floor_rss_bytes"] > 0
    assert loads["fp8-checkpoint"]["transformer_bytes"] < loads["bf16"]["transformer_bytes"]
    assert list(scratch.iterdir()) == []  # the random checkpoints are deleted
    assert "peak, FP8 checkpoint / FP8 resident" in capsys.readouterr().out
    saved = json.loads((tmp_path / "fp8_memory.json").read_text())
    assert saved["settings"]["arch"] == "tiny"


def test_meta_build_counts_sd35_medium_without_memory():
    found = fp8_memory.meta_weight_bytes("medium")

    assert found["parameters"] == pytest.approx(2.24e9, rel=0.01)
    # The 16-bit figure counts every parameter at 2 bytes, plus the positional buffer.
    assert found["bf16_bytes"] > 2 * found["parameters"]
    assert 0.5 < found["fp8_bytes"] / found["bf16_bytes"] < 0.65
