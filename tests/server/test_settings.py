"""Configuration: TOML file, environment and flags, with errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import OtherSizes, PrecisionPolicy
from server.settings import DEFAULT_ADDRESS, ConfigError, load_settings

CONFIG = """
[server]
address = "0.0.0.0:6000"
default_model = "medium"
inventory = "nvml"

[scheduler]
queue_capacity = 8
reserve_gib = 2.5
batch_window_ms = 20
max_batch_size = 2

[[models]]
id = "medium"
source = "/models/sd3.5-medium"
precision = "fp8"
device = "cuda:1"
min_replicas = 2
max_replicas = 6
limits = { max_width = 1536, max_steps = 60 }
defaults = { steps = 28, guidance_scale = 4.0 }

[[models]]
id = "tiny"
source = "demo"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pointillist.toml"
    path.write_text(text)
    return path


def test_no_config_serves_the_demo_model_on_loopback():
    settings = load_settings(environ={})

    assert settings.address == DEFAULT_ADDRESS == "127.0.0.1:50051"
    (model,) = settings.models
    assert model.id == "demo" and model.source == "demo"
    assert model.precision is PrecisionPolicy.AUTO


def test_toml_lists_models_with_limits_defaults_and_server_keys(tmp_path):
    settings = load_settings(write(tmp_path, CONFIG), environ={})

    assert settings.address == "0.0.0.0:6000"
    assert settings.default_model == "medium"
    assert settings.inventory == "nvml"
    scheduler = settings.scheduler
    assert scheduler.queue_capacity == 8 and scheduler.max_batch_size == 2
    assert scheduler.reserve_bytes == int(2.5 * 2**30)
    assert scheduler.batch_window_s == 0.02
    medium, tiny = settings.models
    assert (medium.min_replicas, medium.max_replicas) == (2, 6)
    assert (tiny.min_replicas, tiny.max_replicas) == (1, None)
    assert medium.precision is PrecisionPolicy.FP8 and medium.device == "cuda:1"
    assert medium.limits.max_width == 1536 and medium.limits.max_height == 1024
    assert medium.limits.max_steps == 60
    assert medium.defaults.steps == 28 and medium.defaults.guidance_scale == 4.0
    assert tiny.limits.max_width == 512  # the demo model's own limits apply


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path, CONFIG)
    env = {"POINTILLIST_CONFIG": str(path), "POINTILLIST_ADDRESS": "127.0.0.1:7000"}

    assert load_settings(environ=env).address == "127.0.0.1:7000"
    flagged = load_settings(environ=env, overrides={"address": "127.0.0.1:8000"})
    assert flagged.address == "127.0.0.1:8000"


def test_model_flags_serve_one_model_instead_of_the_list(tmp_path):
    settings = load_settings(
        write(tmp_path, CONFIG),
        environ={},
        overrides={"model_source": "/weights/sd35m", "precision": "fp8", "device": "cuda"},
    )

    (model,) = settings.models
    assert model.id == "sd35m" and model.source == "/weights/sd35m"
    assert model.precision is PrecisionPolicy.FP8
    assert settings.default_model == "sd35m"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[server]\nadress = 'x'\n", "unknown keys adress"),
        ("[[models]]\nsource = 'demo'\n", "'id' is required"),
        ("[[models]]\nid = 'a'\nprecision = 'fp4'\n", "'fp4' is not a valid PrecisionPolicy"),
        ("[[models]]\nid = 'a'\nlimits = { max_widht = 5 }\n", "max_widht"),
        ("[[models]]\nid = 'a'\n[[models]]\nid = 'a'\n", "unique"),
        ("[server]\ndefault_model = 'zzz'\n", "default_model 'zzz'"),
        ("[scheduler]\nreserve_gb = 1\n", "unknown keys reserve_gb"),
        ("[[models]]\nid = 'a'\nmin_replicas = 3\nmax_replicas = 2\n", "below min_replicas"),
        ("[[models]]\nid = 'a'\nmin_replicas = -1\n", "min_replicas must be"),
        ("not toml [", "pointillist.toml"),
        ("[[models]]\nid = 'a'\ncompile = 'yes'\n", "compile must be true or false"),
        ("[[models]]\nid = 'a'\ncompile_sizes = [[256, 256]]\n", "need compile = true"),
        ("[[models]]\nid = 'a'\ncompile = true\ncompile_sizes = [256, 256]\n", "pairs"),
        ("[[models]]\nid = 'a'\ncompile = true\ncompile_sizes = [[250, 256]]\n", "250x256"),
        ("[[models]]\nid = 'a'\ncompile = true\ncompile_sizes = [[1024, 1024]]\n", "512x512"),
        ("[[models]]\nid = 'a'\ncompile = true\ncompile_other_sizes = 'no'\n", "'refuse'"),
        ("[server]\njob_store = 'postgres://x'\n", "job_store 'postgres://x'"),
        ("[server]\njob_lease_s = 0\n", "job_lease_s must be above 0"),
    ],
)
def test_malformed_config_says_what_is_wrong(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(write(tmp_path, text), environ={})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_compile_options_default_to_the_default_size_and_eager_elsewhere(tmp_path):
    text = """
[scheduler]
compile_cache_dir = "/var/cache/pointillist"

[[models]]
id = "plain"

[[models]]
id = "compiled"
compile = true

[[models]]
id = "strict"
compile = true
compile_sizes = [[256, 256], [512, 384], [256, 256]]
compile_other_sizes = "refuse"
"""
    settings = load_settings(write(tmp_path, text), environ={})

    assert settings.scheduler.compile_cache_dir == "/var/cache/pointillist"
    plain, compiled, strict = settings.models
    assert not plain.compile and plain.compiled_sizes() == ()
    assert compiled.compiled_sizes() == ((256, 256),)  # the demo's default size
    assert compiled.compile_other_sizes is OtherSizes.UNCOMPILED
    assert strict.compiled_sizes() == ((256, 256), (512, 384))
    assert strict.compile_other_sizes is OtherSizes.REFUSE
