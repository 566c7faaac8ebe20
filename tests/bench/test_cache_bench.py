"""A tiny run of bench.cache, so it never rots."""

from __future__ import annotations

import json
from pathlib import Path

from bench import cache


def test_cache_bench_runs_and_records(tmp_path: Path) -> None:
    results = cache.run(runs=2, steps=2, size=64, out=tmp_path)

    for name in ("result_cache", "prompt_embeddings"):
        assert len(results[name]["miss_samples_s"]) == len(results[name]["hit_samples_s"]) == 2
        assert results[name]["ratio_miss_over_hit"] > 0
    saved = json.loads((tmp_path / "cache.json").read_text())
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
