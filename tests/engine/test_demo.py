"""The demo model: real SD3 classes and geometry, tiny deterministic weights, no files."""

from __future__ import annotations

import subprocess
import sys

from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from transformers import CLIPTextModelWithProjection, T5EncoderModel

from engine.demo import build_demo_pipeline, demo_weights_revision


def test_two_builds_have_identical_weights() -> None:
    first = build_demo_pipeline()
    second = build_demo_pipeline()
    assert demo_weights_revision(first) == demo_weights_revision(second)
    a, b = first.transformer.state_dict(), second.transformer.state_dict()
    assert all((a[key] == b[key]).all() for key in a)


def test_real_sd3_geometry_and_classes() -> None:
    pipe = build_demo_pipeline()
    assert pipe.vae_scale_factor == 8
    assert pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.in_channels == 16
    assert pipe.transformer.config.patch_size == 2
    # The default size the pipeline derives is the demo's default, 256x256.
    assert pipe.default_sample_size * pipe.vae_scale_factor == 256
    assert isinstance(pipe.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_3, T5EncoderModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)


def test_tokenizers_work_offline_with_bounded_lengths() -> None:
    pipe = build_demo_pipeline()
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer_3.model_max_length == 256
    ids = pipe.tokenizer("Ünïcode & emoji \N{SNOWMAN} too").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.unk_token_id not in ids[1:-1]
    assert pipe.tokenizer_3("a red fox").input_ids[-1] == pipe.tokenizer_3.eos_token_id


def test_importing_the_engine_package_loads_no_torch() -> None:
    code = (
        "import sys, engine, engine.config, engine.job\n"
        "assert 'torch' not in sys.modules, 'engine imports torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
