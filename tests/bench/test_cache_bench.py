"""A tiny run of bench.cache, so it never rots: a smoke test of the harness. The benchmark itself
asserts that every hit was a hit with the miss's bytes; this checks the record, not any speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cache, record


def test_cache_bench_runs_and_records(tmp_path: Path) -> None:
    results = cache.run(runs=2, steps=2, size=64, out=tmp_path)

    for name in ("result_cache", "prompt_embeddings"):
        assert len(results[name]["miss_samples_s"]) == len(results[name]["hit_samples_s"]) == 2
        misses, hits = results[name]["miss_samples_s"], results[name]["hit_samples_s"]
        assert min(misses + hits) > 0
        ratio = record.median(misses) / record.median(hits)
        assert results[name]["ratio_miss_over_hit"] == pytest.approx(ratio)
    saved = json.loads((tmp_path / "cache.json").read_text())
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
