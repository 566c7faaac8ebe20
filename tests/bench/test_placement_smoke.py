"""A tiny run of the placement benchmark, so it never rots."""

from __future__ import annotations

import json

from bench import placement


def test_placement_benchmark_runs_and_records(tmp_path, capsys):
    code = placement.main(["--cases", "6", "--seed", "3", "--out", str(tmp_path)])

    output = capsys.readouterr().out
    assert code == 0
    assert "pointillist (measured)" in output
    assert "ray-style num_gpus=0.25" in output
    saved = json.loads((tmp_path / "placement.json").read_text())
    assert saved["settings"]["cases"] == 6
    results = saved["results"]
    assert results["pointillist"]["overcommitted_gpus"] == 0
    assert results["pointillist"]["placed"] == results["pointillist"]["running"]
    assert results["pointillist"]["placed"] <= results["optimum_or_bound"]
    exact = results["exact_optimum"]
    assert exact["pointillist_replicas"] == exact["optimum_replicas"]
    assert exact["pointillist_below_optimum"] == 0


def test_ray_style_ignores_memory_and_tenants():
    models = placement.model_demands()
    inventory = placement.SimulatedInventory(
        [placement.SimulatedGpu.of_gib("small", 24), placement.SimulatedGpu.of_gib("big", 141)]
    )

    small, big = placement.ray_style(inventory.snapshot(), models, 0.25)

    assert small.placed == big.placed == 4
    assert small.overcommitted_gpus == 1
    assert small.running < 4
    assert big.running == 4
    assert big.overcommitted_gpus == 0
