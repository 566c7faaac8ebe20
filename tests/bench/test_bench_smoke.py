"""Benchmarks are not tests; a tiny run of each is, so they never rot.

These are smoke tests of the harness: they check that every request of the run succeeded (the
benchmark asserts each result as it goes), that the record has every field and that its summary
agrees with its own samples. They assert no speed figure: that depends on the machine, and lives
in the README's benchmark table.
"""

from __future__ import annotations

import json

import pytest

from bench import fp8_weight_bytes, record, server_overhead


def test_server_overhead_runs_and_records(tmp_path):
    results = server_overhead.run(runs=2, steps=2, size=64, out=tmp_path)

    server, direct = results["server_samples_s"], results["in_process_samples_s"]
    assert len(server) == len(direct) == 2 and min(server + direct) > 0
    assert results["ratio_of_medians"] == pytest.approx(
        record.median(server) / record.median(direct)
    )
    saved = json.loads((tmp_path / "server_overhead.json").read_text())
    assert saved["results"] == results
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
    assert "torch" in saved["versions"]


def test_fp8_weight_bytes_shows_the_transformer_smaller_in_fp8(tmp_path):
    sizes = fp8_weight_bytes.run(out=tmp_path)

    assert sizes["fp8"]["transformer"] < sizes["bf16"]["transformer"]
    assert sizes["fp8"]["vae"] == sizes["bf16"]["vae"]  # the VAE stays 16-bit
    assert (tmp_path / "fp8_weight_bytes.json").exists()
