"""``pointillist plan``: through the real CLI entry point, on simulated inventories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.config import ModelConfig, PrecisionPolicy
from pointillist.cli import main
from scheduler.placement_estimate import estimate_footprint

GIB = 1 << 30
EXAMPLE = Path(__file__).parent / "inventories" / "two_gpus.toml"
TWO_MODELS = """
[[models]]
id = "medium"
source = "stabilityai/stable-diffusion-3.5-medium"
precision = "fp8"

[[models]]
id = "large"
source = "/models/house-style"
precision = "fp8"
"""


def device_line(output: str, device_id: str) -> list[str]:
    (line,) = [line for line in output.splitlines() if line.startswith(device_id + " ")]
    return line.split()


def test_plan_prints_a_line_per_device(capsys):
    code = main(["plan", "--inventory", str(EXAMPLE), "--footprint", "demo=10", "--under-load"])

    output = capsys.readouterr().out
    assert code == 0
    # sim-gpu-0: 80 GiB - 4 tenant - 1 reserve = 75 -> 7 replicas; sim-gpu-1: 24 - 2 - 1 -> 2.
    assert device_line(output, "sim-gpu-0")[-4:] == ["76.0", "7", "70.0", "5.0"]
    assert device_line(output, "sim-gpu-1")[-4:] == ["22.0", "2", "20.0", "1.0"]
    assert "demo: 10.0 GiB per replica (given)" in output
    assert "9 replicas (exact search)" in output


def test_plan_estimates_footprints_from_the_config(tmp_path, capsys):
    config = tmp_path / "server.toml"
    config.write_text(TWO_MODELS)

    code = main(
        ["plan", "--inventory", str(EXAMPLE), "--config", str(config), "--max", "3", "--under-load"]
    )

    output = capsys.readouterr().out
    assert code == 0
    assert "medium: 11.7 GiB per replica (estimate: SD3.5 Medium, FP8), replicas 1..3" in output
    assert "large: 16.9 GiB per replica (estimate: SD3.5 Large, FP8 (size not in" in output
    header = next(line for line in output.splitlines() if line.startswith("device"))
    assert header.split()[6:8] == ["medium", "large"]
    gpu0, gpu1 = device_line(output, "sim-gpu-0"), device_line(output, "sim-gpu-1")
    medium = int(gpu0[-4]) + int(gpu1[-4])
    large = int(gpu0[-3]) + int(gpu1[-3])
    # 75 GiB hold 2 x 11.7 + 3 x 16.9, 21 GiB one more medium: both models at their --max.
    assert (medium, large) == (3, 3)


def test_plan_with_per_model_bounds_and_reserve(tmp_path, capsys):
    config = tmp_path / "server.toml"
    config.write_text(TWO_MODELS)

    code = main(
        [
            "plan", "--inventory", str(EXAMPLE), "--config", str(config),
            "--replicas", "large=0:0", "--reserve-gib", "0", "--footprint", "medium=19",
            "--under-load",
        ]
    )  # fmt: skip

    output = capsys.readouterr().out
    assert code == 0
    assert "reserve 0.0 GiB per device" in output
    assert device_line(output, "sim-gpu-0")[-4:-2] == ["4", "0"]  # 76 // 19
    assert device_line(output, "sim-gpu-1")[-4:-2] == ["1", "0"]  # 22 // 19


def test_plan_exits_1_when_a_minimum_cannot_be_met(capsys):
    code = main(["plan", "--inventory", str(EXAMPLE), "--footprint", "demo=10", "--min", "10"])

    output = capsys.readouterr().out
    assert code == 1
    assert "minimum not met: demo" in output


def test_plan_refuses_unknown_models_and_bad_inventories(tmp_path, capsys):
    assert main(["plan", "--inventory", str(EXAMPLE), "--footprint", "nope=3"]) == 2
    assert "unknown model nope" in capsys.readouterr().err

    assert main(["plan", "--inventory", str(tmp_path / "none.toml")]) == 1
    assert "neither 'nvml', 'cpu' nor an existing" in capsys.readouterr().err

    bad = tmp_path / "bad.toml"
    bad.write_text('[[gpus]]\nid = "a"\n')
    assert main(["plan", "--inventory", str(bad)]) == 1
    assert "'memory_gib' is required" in capsys.readouterr().err

    assert main(["plan", "--inventory", str(EXAMPLE), "--footprint", "demo"]) == 2
    assert "MODEL=GIB" in capsys.readouterr().err


def test_plan_at_start_places_each_model_at_its_minimum(capsys):
    code = main(["plan", "--inventory", str(EXAMPLE), "--footprint", "demo=10", "--min", "2"])

    output = capsys.readouterr().out
    assert code == 0
    # Nothing waits at start: two replicas, spread, however many more would fit.
    assert device_line(output, "sim-gpu-0")[-3] == "1"
    assert device_line(output, "sim-gpu-1")[-3] == "1"
    assert "2 replicas (exact search)" in output
    assert "placement at start" in output


def test_plan_reads_the_reserve_from_the_config(tmp_path, capsys):
    config = tmp_path / "server.toml"
    config.write_text("[scheduler]\nreserve_gib = 3.5\n")

    assert main(["plan", "--inventory", str(EXAMPLE), "--config", str(config)]) == 0
    assert "reserve 3.5 GiB per device" in capsys.readouterr().out


def test_plan_on_the_cpu_places_on_the_host_within_its_core_shares(tmp_path, capsys):
    code = main(["plan", "--inventory", "cpu", "--footprint", "demo=0.5", "--max", "2"])
    output = capsys.readouterr().out
    assert code == 0
    assert device_line(output, "cpu")[-3] == "1"

    # The host takes cpu_max_replicas replicas (each a share of its cores), like the server.
    config = tmp_path / "server.toml"
    config.write_text("[scheduler]\ncpu_max_replicas = 2\n")
    code = main(
        [
            "plan", "--inventory", "cpu", "--config", str(config), "--footprint", "demo=0.5",
            "--max", "2", "--under-load",
        ]
    )  # fmt: skip
    assert code == 0
    assert device_line(capsys.readouterr().out, "cpu")[-3] == "2"


def test_plan_runs_as_a_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "pointillist.cli", "plan", "--inventory", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "sim-gpu-0" in result.stdout
    assert "sim-gpu-1" in result.stdout


def test_footprint_estimates():
    medium = estimate_footprint(
        ModelConfig("m", "stabilityai/stable-diffusion-3.5-medium", PrecisionPolicy.FP8)
    )
    large_bf16 = estimate_footprint(
        ModelConfig("l", "stabilityai/stable-diffusion-3.5-large", PrecisionPolicy.BF16)
    )

    assert round(medium.bytes / GIB, 1) == 11.7
    assert round(large_bf16.bytes / GIB, 1) == 28.7
    assert estimate_footprint(ModelConfig("d")).reason == "estimate: demo model"


def test_the_scheduler_and_the_planner_import_without_torch():
    probe = (
        "import sys, scheduler.placement, scheduler.nvml_inventory, scheduler.cpu_inventory,"
        " scheduler.simulated_inventory, server.plan_cli, bench.placement;"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == ""
