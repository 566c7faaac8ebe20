"""A harness smoke test of ``python -m bench watchers`` at a tiny size (20 watchers, 6 streams):
it checks the benchmark runs against a real server process and reports every figure; the figures
of a run this small mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import watchers


def test_the_watchers_benchmark_runs_and_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--watchers", "20", "--streams", "6", "--channels", "3", "--steps", "2"]
    watchers.main([*tiny, "--replicas", "1", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "watchers.json").read_text())["results"]
    assert results["watch"]["all_in_order"] and results["watch"]["in_order"] == 20
    assert results["stream"]["complete"] == 6
    assert results["watch"]["server_cpu_s"] > 0
    assert results["health"]["samples"] > 0
    assert 0 < results["health"]["p50_ms"] <= results["health"]["p99_ms"]
    assert results["rss_mib"]["before"] > 0 and results["rss_mib"]["after"] > 0
    assert "watchers in order" in capsys.readouterr().out
