"""A tiny run of the tracing benchmark, so it never rots."""

from __future__ import annotations

import json

from bench import tracing_overhead


def test_tracing_overhead_runs_exports_and_records(tmp_path):
    results = tracing_overhead.run(runs=2, steps=2, size=64, out=tmp_path)

    assert len(results["traced_samples_s"]) == len(results["off_samples_s"]) == 2
    assert results["ratio_of_medians"] > 0
    # Every traced request's spans reached the receiver: RPC, validate, job, queue wait,
    # dispatch and the four worker phases, for the warm-up request and each run.
    assert results["spans_received"] >= 3 * 9
    saved = json.loads((tmp_path / "tracing_overhead.json").read_text())
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
