"""The `pointillist` CLI as a user runs it: generate, models, quantize (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pointillist.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_generate_writes_the_image_and_shows_progress(demo_server, tmp_path):
    out = tmp_path / "lighthouse.png"
    done = cli(
        "generate", "a lighthouse at dusk", "--server", demo_server.address,
        "--steps", "5", "--width", "64", "--height", "64", "--seed", "7", "-o", str(out),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"{out}  seed=7" in done.stdout
    assert "5/5" in done.stderr  # the progress display reached the last step
    assert Image.open(out).size == (64, 64)


def test_generate_with_a_bad_field_exits_2_and_names_it(demo_server, tmp_path):
    done = cli("generate", "x", "--server", demo_server.address, "--width", "100")

    assert done.returncode == 2
    assert "parameters.width" in done.stderr
    assert "Traceback" not in done.stderr


def test_models_prints_the_demo_model(demo_server):
    done = cli("models", "--server", demo_server.address)

    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "512x512" in done.stdout


def test_quantize_writes_an_fp8_checkpoint_folder(tmp_path):
    dest = tmp_path / "demo-fp8"
    done = cli("quantize", "demo", str(dest), timeout=300)

    assert done.returncode == 0, done.stderr
    marker = json.loads((dest / "pointillist_fp8.json").read_text())
    assert set(marker["quantized_components"]) >= {"transformer", "text_encoder_3"}
    assert marker["format_version"] == 2
    assert (dest / "transformer" / "fp8-torchao.safetensors").exists()


def test_quantize_of_a_missing_folder_fails_clearly(tmp_path):
    done = cli("quantize", str(tmp_path / "missing"), str(tmp_path / "out"))

    assert done.returncode == 1
    assert "missing" in done.stderr and "Traceback" not in done.stderr
