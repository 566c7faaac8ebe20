"""The precision policy: which format each pipeline component is stored and computed in, and why.

``fp8`` holds the transformer's (and T5's, when present) Linear layers in FP8 E4M3 with torchao
and keeps CLIP-L, CLIP-G and the VAE 16-bit. How FP8 is used depends on the device:

- CUDA compute capability >= 9.0 (Hopper, Blackwell): the transformer runs W8A8, weights and
  activations FP8 with row-wise scales, so its matmuls run on FP8 tensor cores; T5 (run once per
  prompt) is weight-only FP8.
- compute capability 8.9 (Ada): the same with per-tensor scales.
- Ampere (8.0/8.6) and the CPU: weight-only FP8, which saves memory only.

``bf16``/``fp16``/``fp32`` run everything unquantized; ``auto`` picks fp8 on CUDA and the device's
16-bit type on the CPU. A ``pointillist quantize`` folder stores torchao weight-only FP8; where
the device runs W8A8 its transformer is re-quantized layer by layer at load. Folders written by
the older quanto ``pointillist quantize`` still load as quanto weight-only FP8
(engine/fp8.py). The decision, ``fp8_modes``, is a pure function of a ``DeviceCapability``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)

from engine import fp8, fp8_torchao
from engine.config import PrecisionPolicy
from engine.fp8_torchao import Fp8Mode
from engine.job import ComponentPrecision

# Pipeline attributes holding weights, in the order the pipeline runs them.
COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae")
# The large ones FP8 pays off for: the MMDiT and T5-XXL hold ~90% of SD3.5's weights.
FP8_COMPONENTS = ("transformer", "text_encoder_3")

_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
_WHAT_QUANTO_IS = (
    "optimum-quanto qfloat8 is weight-only: the weights are stored in FP8 and dequantized to {dt} "
    "for every matmul, which halves their memory but does not make a step faster; re-run "
    "`pointillist quantize` to get a torchao folder"
)
_LABELS = {"transformer": "transformer", "text_encoder_3": "T5"}


@dataclass(frozen=True)
class DeviceCapability:
    """What a device can do, as far as the precision policy cares."""

    device: torch.device
    name: str
    # CUDA compute capability (major, minor); None on the CPU.
    compute_capability: tuple[int, int] | None
    bf16: bool
    # FP8 tensor cores exist from compute capability 8.9 on (Ada, Hopper, Blackwell).
    fp8_tensor_cores: bool
    # The CPU features behind bf16 there ("AVX512-BF16", "AMX"), for the reason sentence.
    cpu_bf16_features: tuple[str, ...] = ()

    @property
    def sixteen_bit(self) -> torch.dtype:
        """The device's 16-bit type: bf16 where supported, else fp16."""
        return torch.bfloat16 if self.bf16 else torch.float16

    def describe(self) -> str:
        """One clause naming the device and its relevant features."""
        if self.compute_capability is None:
            if self.cpu_bf16_features:
                bf16 = f"native bf16 ({', '.join(self.cpu_bf16_features)})"
            else:
                bf16 = "bf16 emulated, no native bf16 instructions"
            return f"{self.device.type} ({self.name}; {bf16})"
        major, minor = self.compute_capability
        tensor_cores = (
            "FP8 tensor cores present"
            if self.fp8_tensor_cores
            else "no FP8 tensor cores (they need compute capability >= 8.9)"
        )
        bf16 = "bf16 supported" if self.bf16 else "no bf16 (needs compute capability >= 8.0)"
        capability = f"compute capability {major}.{minor}"
        return f"{self.device} ({self.name}, {capability}; {bf16}; {tensor_cores})"


@dataclass(frozen=True)
class PrecisionPlan:
    """The precision a model will run in on one device."""

    policy: PrecisionPolicy
    # Storage and compute dtype of every unquantized component, and compute dtype of FP8 ones.
    dtype: torch.dtype
    # Components to hold in FP8, where the pipeline has them.
    fp8_components: tuple[str, ...]
    reason: str
    # How each FP8 component is quantized with torchao; empty for a quanto folder (already FP8).
    fp8_modes: tuple[tuple[str, Fp8Mode], ...] = ()

    def mode_of(self, component: str) -> Fp8Mode | None:
        """The torchao FP8 mode planned for ``component``, None when it stays unquantized."""
        return dict(self.fp8_modes).get(component)


def detect_capability(device: torch.device) -> DeviceCapability:
    """Reads the device's name, compute capability and bf16/FP8 support."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        return DeviceCapability(
            device=device,
            name=props.name,
            compute_capability=capability,
            bf16=capability >= (8, 0),
            fp8_tensor_cores=capability >= (8, 9),
        )
    if device.type != "cpu":
        raise ValueError(f"unsupported device {device}: use cpu or cuda")
    # PyTorch runs bf16 on every x86/Arm CPU (emulated where the instructions are missing).
    features = _cpu_features()
    native = tuple(
        label
        for flag, label in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))
        if features.get(flag)
    )
    name = str(features.get("cpu_name") or "CPU")
    return DeviceCapability(
        device=device,
        name=name,
        compute_capability=None,
        bf16=True,
        fp8_tensor_cores=False,
        cpu_bf16_features=native,
    )


def fp8_modes(capability: DeviceCapability) -> tuple[tuple[tuple[str, Fp8Mode], ...], str]:
    """How each FP8 component is quantized on this device, and a clause that says why.

    Pure: it reads only ``capability``, so CPU tests decide for an H100 or an A10 too.
    """
    cc = capability.compute_capability
    if cc is not None and cc >= (9, 0):
        dynamic, scales = Fp8Mode.DYNAMIC_ROW, "row-wise scales"
    elif cc is not None and cc >= (8, 9):
        # torch's row-wise scaled FP8 matmul is built for Hopper's kernels; per-tensor scales
        # are the variant every FP8 tensor core runs.
        dynamic, scales = Fp8Mode.DYNAMIC_TENSOR, "per-tensor scales (row-wise needs 9.0)"
    else:
        where = "on the CPU" if cc is None else "without FP8 tensor cores"
        slower = (
            "; on the CPU dequantizing makes steps slower than plain bf16" if cc is None else ""
        )
        return (
            (("transformer", Fp8Mode.WEIGHT_ONLY), ("text_encoder_3", Fp8Mode.WEIGHT_ONLY)),
            f"transformer and T5: fp8 e4m3 weights, {{dt}} matmul (torchao weight-only: weights "
            f"are dequantized for every matmul, so {where} it saves memory only and does not "
            f"make a step faster{slower})",
        )
    return (
        (("transformer", dynamic), ("text_encoder_3", Fp8Mode.WEIGHT_ONLY)),
        f"transformer: fp8 e4m3 weights and activations, fp8 matmul on the tensor cores with "
        f"{scales}, {{dt}} output (torchao W8A8 dynamic); T5: fp8 e4m3 weights, {{dt}} matmul "
        f"(weight-only: it runs once per prompt, so memory is what FP8 buys there)",
    )


def plan_precision(
    requested: PrecisionPolicy,
    capability: DeviceCapability,
    stored_fp8: tuple[str, ...] = (),
    stored_backend: str = "torchao",
) -> PrecisionPlan:
    """Resolves the configured policy on this device; ``stored_fp8`` names components a
    ``pointillist quantize`` folder already holds in FP8, written with ``stored_backend``
    ("torchao", or "quanto" for folders of the older format).

    Raises ValueError when the policy asks for 16-bit weights a folder no longer has.
    """
    device = capability.describe()
    sixteen = capability.sixteen_bit
    sixteen_name = _DTYPE_NAMES[sixteen]
    keep_16 = f"CLIP-L, CLIP-G and the VAE: {sixteen_name} weights and compute"
    if stored_fp8:
        if requested not in (PrecisionPolicy.AUTO, PrecisionPolicy.FP8):
            raise ValueError(
                f"precision {requested.value} asked for, but this folder holds "
                f"{' and '.join(stored_fp8)} in FP8 only (written by `pointillist quantize`); "
                "use precision fp8 or auto, or load the original 16-bit source"
            )
        stored = (
            f"{requested.value} on {device}: fp8, because the folder already stores "
            f"{' and '.join(stored_fp8)} in FP8 E4M3 (pointillist quantize"
        )
        if stored_backend == "quanto":
            reason = (
                f"{stored}, optimum-quanto); {_WHAT_QUANTO_IS.format(dt=sixteen_name)}; {keep_16}"
            )
            return PrecisionPlan(PrecisionPolicy.FP8, sixteen, FP8_COMPONENTS, reason)
        modes, fp8_clause = fp8_modes(capability)
        fp8_clause = fp8_clause.format(dt=sixteen_name)
        if any(mode.fp8_matmul for _, mode in modes):
            fp8_clause += " (the folder's weight-only FP8 is re-quantized to W8A8 at load)"
        reason = f"{stored}, torchao weight-only); {fp8_clause}; {keep_16}"
        return PrecisionPlan(PrecisionPolicy.FP8, sixteen, FP8_COMPONENTS, reason, modes)

    modes, fp8_clause = fp8_modes(capability)
    fp8_clause = fp8_clause.format(dt=sixteen_name)
    if requested is PrecisionPolicy.AUTO:
        if capability.device.type == "cuda":
            return PrecisionPlan(
                PrecisionPolicy.FP8,
                sixteen,
                FP8_COMPONENTS,
                f"auto on {device}: fp8, so more replicas fit in GPU memory; {fp8_clause}; "
                f"{keep_16}",
                modes,
            )
        return PrecisionPlan(
            _policy_of(sixteen),
            sixteen,
            (),
            f"auto on {device}: {sixteen_name} for every component; FP8 is not used on the CPU "
            f"because there it can only be weight-only, which dequantizes the weights at every "
            f"matmul and only slows steps down",
        )
    if requested is PrecisionPolicy.FP8:
        return PrecisionPlan(
            PrecisionPolicy.FP8,
            sixteen,
            FP8_COMPONENTS,
            f"fp8 on {device}: {fp8_clause}; {keep_16}",
            modes,
        )
    if requested is PrecisionPolicy.BF16 and not capability.bf16:
        return PrecisionPlan(
            PrecisionPolicy.FP16,
            torch.float16,
            (),
            f"bf16 asked for on {device}, which has no bf16: fp16 for every component instead",
        )
    dtype = {
        PrecisionPolicy.BF16: torch.bfloat16,
        PrecisionPolicy.FP16: torch.float16,
        PrecisionPolicy.FP32: torch.float32,
    }[requested]
    return PrecisionPlan(
        requested,
        dtype,
        (),
        f"{requested.value} on {device}: every component unquantized in {_DTYPE_NAMES[dtype]}",
    )


def apply_plan(pipe: StableDiffusion3Pipeline, plan: PrecisionPlan, device: torch.device) -> None:
    """Quantizes and moves every component of ``pipe`` as the plan says.

    The pipeline must already be in ``plan.dtype`` (``load_pipeline`` loads it so, and
    from_pretrained keeps the few layers a model needs in float32, such as T5's ``wo`` in fp16).

    Quantization runs on the CPU before the move (torchao quantizes on the device a module is
    on, and dynamic mode's checks only read the CUDA capability), so the GPU never holds the
    16-bit copy of an FP8 component: a replica's peak GPU memory is what it keeps, which is
    what lets the scheduler pack replicas by measured memory.
    """
    for name in COMPONENTS:
        module: torch.nn.Module | None = getattr(pipe, name, None)
        if module is None:
            continue
        mode = plan.mode_of(name)
        if fp8.is_fp8_quantized(module):
            # Already FP8 (read from a quanto `pointillist quantize` folder): only move it.
            fp8.move_to_device(module, device)
        elif fp8_torchao.is_fp8_quantized(module):
            # Read from a torchao folder (weight-only): W8A8 where the plan says so.
            if mode is not None:
                fp8_torchao.requantize_fp8(module, mode)
            module.to(device)
        elif mode is not None:
            # torchao's Float8Tensor moves with .to() and keeps its mode.
            fp8_torchao.quantize_fp8(module, mode)
            module.to(device)
        else:
            module.to(device)
        # Inference only (quanto's frozen weights are created requiring gradients): no call
        # can then build an autograd graph, even outside torch.no_grad.
        module.requires_grad_(False)


def component_precisions(pipe: StableDiffusion3Pipeline) -> tuple[ComponentPrecision, ...]:
    """What each component really holds, read from its tensors rather than from the plan."""
    result = []
    for name in COMPONENTS:
        module: torch.nn.Module | None = getattr(pipe, name, None)
        if module is None:
            continue
        compute = _DTYPE_NAMES.get(_main_dtype(module, lambda t: t.dtype), "mixed")
        if fp8_torchao.is_fp8_quantized(module):
            weights = "fp8_e4m3"
            if fp8_torchao.fp8_matmul(module):
                compute = "fp8_e4m3"
        elif fp8.is_fp8_quantized(module):
            weights = "fp8_e4m3"
        else:
            weights = _DTYPE_NAMES.get(_main_dtype(module, fp8.weight_storage_dtype), "mixed")
        result.append(ComponentPrecision(component=name, weights=weights, compute=compute))
    return tuple(result)


def _main_dtype(
    module: torch.nn.Module, dtype_of: Callable[[torch.Tensor], torch.dtype]
) -> torch.dtype:
    # The dtype holding most parameters: T5 keeps a few layers in fp32 inside an fp16 model.
    counts: dict[torch.dtype, int] = {}
    for param in module.parameters():
        dtype = dtype_of(param)
        counts[dtype] = counts.get(dtype, 0) + param.numel()
    return max(counts, key=lambda dtype: counts[dtype])


def _policy_of(dtype: torch.dtype) -> PrecisionPolicy:
    return PrecisionPolicy.BF16 if dtype == torch.bfloat16 else PrecisionPolicy.FP16


def _cpu_features() -> dict[str, object]:
    # torch.cpu.get_capabilities exists in recent torch only; without it the reason just omits
    # the instruction sets.
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return {}
    try:
        return dict(get_capabilities())
    except RuntimeError:
        return {}
