"""A tiny run of the tracing benchmark, so it never rots: a smoke test of the harness (every
request succeeded, every span arrived, the record agrees with its samples), not of any speed."""

from __future__ import annotations

import json

import pytest

from bench import record, tracing_overhead


def test_tracing_overhead_runs_exports_and_records(tmp_path):
    results = tracing_overhead.run(runs=2, steps=2, size=64, out=tmp_path)

    traced, off = results["traced_samples_s"], results["off_samples_s"]
    assert len(traced) == len(off) == 2 and min(traced + off) > 0
    assert results["ratio_of_medians"] == pytest.approx(record.median(traced) / record.median(off))
    # Every traced request's spans reached the receiver: RPC, validate, job, queue wait,
    # dispatch and the four worker phases, for the warm-up request and each run.
    assert results["spans_received"] >= 3 * 9
    saved = json.loads((tmp_path / "tracing_overhead.json").read_text())
    assert saved["settings"] == {"runs": 2, "steps": 2, "size": 64}
