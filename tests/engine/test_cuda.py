"""The engine on a CUDA GPU; skipped where there is none (CI has none)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import fp8
from engine.config import PrecisionPolicy, demo_model_config
from engine.engine import Engine
from engine.fp8_checkpoint import quantize_checkpoint
from tests.engine.conftest import SpecFactory

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cuda_engine() -> Engine:
    return Engine.load(dataclasses.replace(demo_model_config(), device="cuda"))


def test_auto_on_cuda_is_fp8_on_the_gpu(cuda_engine: Engine) -> None:
    loaded = cuda_engine.loaded
    assert loaded.device.kind == "cuda"
    assert loaded.device.id.startswith("GPU-")
    assert "compute capability" in loaded.precision_reason
    precisions = {p.component: p.weights for p in loaded.precisions}
    assert precisions["transformer"] == precisions["text_encoder_3"] == "fp8_e4m3"
    for sub in cuda_engine.pipe.transformer.modules():
        if isinstance(sub, torch.nn.Linear):
            # Plain quanto FP8 tensors on the GPU, not the Marlin kernel's packed ones.
            assert fp8.is_fp8_weight(sub.weight)
            assert sub.weight.device.type == "cuda"


def test_cuda_generation_is_deterministic(cuda_engine: Engine, make_spec: SpecFactory) -> None:
    spec = make_spec(steps=4, num_images=2)
    first = cuda_engine.generate(spec, lambda event: None, lambda: False)
    second = cuda_engine.generate(spec, lambda event: None, lambda: False)
    assert [i.data for i in first.images] == [i.data for i in second.images]


def test_fp8_checkpoint_on_cuda_matches_quantize_at_load(
    cuda_engine: Engine, make_spec: SpecFactory, tmp_path: Path
) -> None:
    quantize_checkpoint("demo", tmp_path / "fp8")
    config = dataclasses.replace(
        demo_model_config(),
        source=str(tmp_path / "fp8"),
        device="cuda",
        precision=PrecisionPolicy.AUTO,
    )
    from_folder = Engine.load(config)
    spec = make_spec(steps=4)
    a = from_folder.generate(spec, lambda event: None, lambda: False)
    b = cuda_engine.generate(spec, lambda event: None, lambda: False)
    assert a.images[0].data == b.images[0].data


def test_a_compiled_cuda_engine_gives_the_eager_image_within_the_tolerance(
    cuda_engine: Engine, make_spec: SpecFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CPU test's tolerance (tests/server/test_compiled_replica.py); on a GPU, with FP8 W8A8
    # where the capability allows, not measured yet: scripts/gpu-check.sh runs this.
    from tests.server.test_compiled_replica import MAX_TOLERANCE, MEAN_TOLERANCE

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    config = dataclasses.replace(
        demo_model_config(), device="cuda", compile=True, compile_sizes=((64, 64),)
    )
    compiled = Engine.load(config)
    compiled.warm_up(make_spec())
    assert compiled.compiled is not None and compiled.compiled.shapes
    spec = make_spec(steps=4)
    calls = compiled.compiled.compiled_calls
    a = compiled.generate(spec, lambda event: None, lambda: False).images[0]
    assert compiled.compiled.compiled_calls > calls  # the compiled graph ran
    b = cuda_engine.generate(spec, lambda event: None, lambda: False).images[0]
    difference = np.abs(pixels(a.data) - pixels(b.data))
    print(f"\ncompiled vs eager on CUDA: mean {difference.mean():.2f}, largest {difference.max()}")
    assert difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
