"""The precision policy: what each component really holds, and the reasons given."""

from __future__ import annotations

import pytest
import torch

from engine import fp8, fp8_torchao
from engine.config import PrecisionPolicy
from engine.engine import Engine
from engine.fp8_torchao import Fp8Mode
from engine.precision import DeviceCapability, detect_capability, fp8_modes, plan_precision
from tests.engine.conftest import load_demo


def linear_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [sub.weight for sub in module.modules() if isinstance(sub, torch.nn.Linear)]


def test_fp8_policy_stores_transformer_and_t5_in_fp8(fp8_engine: Engine) -> None:
    pipe = fp8_engine.pipe
    for component in (pipe.transformer, pipe.text_encoder_3):
        weights = linear_weights(component)
        assert weights
        for weight in weights:
            assert fp8_torchao.is_fp8_weight(weight)
            assert fp8.weight_storage_dtype(weight) == torch.float8_e4m3fn
            # Weight-only on the CPU: activations are not quantized.
            assert getattr(weight, "act_quant_kwargs", None) is None


def test_fp8_policy_keeps_clip_and_vae_plain_bf16(fp8_engine: Engine) -> None:
    pipe = fp8_engine.pipe
    for component in (pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
        for param in component.parameters():
            assert type(param.data) is torch.Tensor
            assert param.dtype == torch.bfloat16


def test_fp8_policy_reports_components_and_an_honest_reason(fp8_engine: Engine) -> None:
    precisions = {p.component: (p.weights, p.compute) for p in fp8_engine.loaded.precisions}
    assert precisions == {
        "text_encoder": ("bf16", "bf16"),
        "text_encoder_2": ("bf16", "bf16"),
        "text_encoder_3": ("fp8_e4m3", "bf16"),
        "transformer": ("fp8_e4m3", "bf16"),
        "vae": ("bf16", "bf16"),
    }
    reason = fp8_engine.loaded.precision_reason
    assert "torchao weight-only" in reason
    assert "saves memory only" in reason
    assert "slower" in reason  # on the CPU, dequantizing costs time


def test_auto_on_the_cpu_is_bf16(bf16_engine: Engine) -> None:
    assert {(p.weights, p.compute) for p in bf16_engine.loaded.precisions} == {("bf16", "bf16")}
    reason = bf16_engine.loaded.precision_reason
    assert reason.startswith("auto on cpu")
    assert "FP8 is not used on the CPU" in reason
    for param in bf16_engine.pipe.transformer.parameters():
        assert type(param.data) is torch.Tensor and param.dtype == torch.bfloat16


def test_fp16_policy_runs_fp16() -> None:
    engine = load_demo(PrecisionPolicy.FP16)
    assert {(p.weights, p.compute) for p in engine.loaded.precisions} == {("fp16", "fp16")}


def test_fp8_halves_the_transformer_weights(fp8_engine: Engine, bf16_engine: Engine) -> None:
    fp8_bytes = fp8.weight_bytes(fp8_engine.pipe.transformer)
    bf16_bytes = fp8.weight_bytes(bf16_engine.pipe.transformer)
    # FP8 data is half of bf16; scales, biases, norms and the positional grid stay 16-bit.
    assert fp8_bytes < 0.75 * bf16_bytes
    linear_bf16 = sum(w.numel() * 2 for w in linear_weights(bf16_engine.pipe.transformer))
    linear_fp8 = sum(w.numel() for w in linear_weights(fp8_engine.pipe.transformer))
    assert bf16_bytes - fp8_bytes >= linear_bf16 - linear_fp8 - linear_fp8 // 10


def test_weight_bytes_counts_plain_tensors_exactly() -> None:
    module = torch.nn.Linear(8, 4).to(torch.bfloat16)
    assert fp8.weight_bytes(module) == (8 * 4 + 4) * 2


def cuda_capability(major: int, minor: int, name: str) -> DeviceCapability:
    return DeviceCapability(
        device=torch.device("cuda", 0),
        name=name,
        compute_capability=(major, minor),
        bf16=(major, minor) >= (8, 0),
        fp8_tensor_cores=(major, minor) >= (8, 9),
    )


def test_auto_on_hopper_is_fp8_w8a8_with_row_wise_scales() -> None:
    plan = plan_precision(PrecisionPolicy.AUTO, cuda_capability(9, 0, "NVIDIA H100"))
    assert plan.policy is PrecisionPolicy.FP8
    assert plan.dtype == torch.bfloat16
    assert plan.fp8_components == ("transformer", "text_encoder_3")
    assert plan.mode_of("transformer") is Fp8Mode.DYNAMIC_ROW
    # T5 runs once per prompt: FP8 matmuls would buy nothing there, its memory is what counts.
    assert plan.mode_of("text_encoder_3") is Fp8Mode.WEIGHT_ONLY
    assert plan.mode_of("vae") is None and plan.mode_of("text_encoder") is None
    assert "compute capability 9.0" in plan.reason
    assert "FP8 tensor cores present" in plan.reason
    assert "fp8 matmul on the tensor cores with row-wise scales, bf16 output" in plan.reason
    assert "CLIP-L, CLIP-G and the VAE: bf16 weights and compute" in plan.reason


@pytest.mark.parametrize("policy", [PrecisionPolicy.AUTO, PrecisionPolicy.FP8])
def test_ada_runs_w8a8_with_per_tensor_scales(policy: PrecisionPolicy) -> None:
    plan = plan_precision(policy, cuda_capability(8, 9, "NVIDIA L4"))
    assert plan.policy is PrecisionPolicy.FP8
    assert plan.mode_of("transformer") is Fp8Mode.DYNAMIC_TENSOR
    assert plan.mode_of("text_encoder_3") is Fp8Mode.WEIGHT_ONLY
    assert "per-tensor scales" in plan.reason and "torchao W8A8 dynamic" in plan.reason


@pytest.mark.parametrize("minor", [0, 6])
def test_ampere_is_weight_only_and_says_it_saves_memory_only(minor: int) -> None:
    plan = plan_precision(PrecisionPolicy.AUTO, cuda_capability(8, minor, "NVIDIA A100"))
    assert plan.policy is PrecisionPolicy.FP8
    assert dict(plan.fp8_modes) == {
        "transformer": Fp8Mode.WEIGHT_ONLY,
        "text_encoder_3": Fp8Mode.WEIGHT_ONLY,
    }
    assert "no FP8 tensor cores" in plan.reason
    assert "fp8 e4m3 weights, bf16 matmul (torchao weight-only" in plan.reason
    assert "saves memory only" in plan.reason
    assert "slower" not in plan.reason  # that is said of the CPU only


def test_fp8_on_the_cpu_is_weight_only_and_says_why() -> None:
    plan = plan_precision(PrecisionPolicy.FP8, detect_capability(torch.device("cpu")))
    assert {mode for _, mode in plan.fp8_modes} == {Fp8Mode.WEIGHT_ONLY}
    assert "on the CPU it saves memory only" in plan.reason
    assert "slower than plain bf16" in plan.reason


def test_fp8_modes_is_a_pure_function_of_the_capability() -> None:
    hopper = cuda_capability(9, 0, "NVIDIA H100")
    assert fp8_modes(hopper) == fp8_modes(cuda_capability(9, 0, "NVIDIA H100"))
    assert fp8_modes(cuda_capability(10, 0, "NVIDIA B200"))[0] == fp8_modes(hopper)[0]


def test_pre_ampere_gpus_fall_back_to_fp16() -> None:
    turing = cuda_capability(7, 5, "Tesla T4")
    assert plan_precision(PrecisionPolicy.AUTO, turing).dtype == torch.float16
    plan = plan_precision(PrecisionPolicy.BF16, turing)
    assert plan.policy is PrecisionPolicy.FP16 and plan.dtype == torch.float16
    assert "no bf16" in plan.reason


def test_a_16_bit_policy_on_an_fp8_folder_is_refused() -> None:
    cpu = detect_capability(torch.device("cpu"))
    with pytest.raises(ValueError, match="FP8 only"):
        plan_precision(PrecisionPolicy.BF16, cpu, stored_fp8=("transformer",))
    plan = plan_precision(PrecisionPolicy.AUTO, cpu, stored_fp8=("transformer",))
    assert plan.policy is PrecisionPolicy.FP8


def test_cpu_capability() -> None:
    capability = detect_capability(torch.device("cpu"))
    assert capability.bf16 and not capability.fp8_tensor_cores
    assert capability.compute_capability is None


def test_a_torchao_folder_runs_w8a8_where_the_gpu_can() -> None:
    stored = ("text_encoder_3", "transformer")
    hopper = plan_precision(PrecisionPolicy.FP8, cuda_capability(9, 0, "H100"), stored)
    assert hopper.mode_of("transformer") is Fp8Mode.DYNAMIC_ROW
    assert hopper.mode_of("text_encoder_3") is Fp8Mode.WEIGHT_ONLY
    assert "torchao weight-only" in hopper.reason and "re-quantized to W8A8" in hopper.reason
    ampere = plan_precision(PrecisionPolicy.AUTO, cuda_capability(8, 6, "A10"), stored)
    assert ampere.mode_of("transformer") is Fp8Mode.WEIGHT_ONLY
    assert "W8A8" not in ampere.reason


def test_a_quanto_folder_keeps_quanto_and_says_how_to_re_quantize() -> None:
    plan = plan_precision(
        PrecisionPolicy.FP8, cuda_capability(9, 0, "H100"), ("transformer",), "quanto"
    )
    assert plan.fp8_modes == ()
    assert "optimum-quanto" in plan.reason and "re-run `pointillist quantize`" in plan.reason
