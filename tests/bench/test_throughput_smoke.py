"""A tiny run of the throughput benchmark against real servers, and the plot drawn from it."""

from __future__ import annotations

import json

from bench import plot, throughput


def test_throughput_runs_every_configuration_and_plots(tmp_path, capsys):
    results = throughput.run([1, 2], requests=2, replicas_list=[1], steps=2, size=64, out=tmp_path)

    assert set(results) == {"replicas=1 batching=off", "replicas=1 batching=on"}
    for cells in results.values():
        assert set(cells) == {"1", "2"}
        for cell in cells.values():
            assert cell["statuses"] == {"OK": 2}
            assert 0 < cell["p50_s"] <= cell["p99_s"]
    assert "img/s vs replicas=1 batching=off" in capsys.readouterr().out
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["settings"]["replicas"] == [1]

    path = plot.plot(tmp_path)

    assert path.read_bytes().startswith(b"\x89PNG")
    assert path.stat().st_size < 100_000
    assert set(plot.series(tmp_path)) == set(results)
