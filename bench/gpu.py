"""The GPU benchmark: step latency, replica VRAM through NVML, replicas packed per GPU, images/min.

    python -m bench.gpu                                   # SD3.5 Medium + Large, random weights
    python -m bench.gpu --weights /models/sd35-medium     # a local diffusers (or FP8) folder
    python -m bench.gpu --arch tiny --device cpu --size 64 --steps 2   # the CPU/demo form

For each model (an architecture with random weights, or the pipeline in ``--weights``) and each
precision, in this order: bf16; ``fp8-weight-only`` (torchao weight-only FP8, random weights
only); ``fp8`` (what the engine's policy picks on the device: torchao W8A8 on compute capability
>= 8.9, weight-only elsewhere, so on the CPU it equals the row above). With ``--compile both``
(the default) each precision runs again as ``<precision>+compile``: the transformer under
``torch.compile(dynamic=False)`` (random weights), or the engine's own ``compile = true`` at
``--size`` (``--weights``); the compilation happens before the timing and is reported apart
(``first call s``):

1. A replica: a child process loads the model onto the device, warms up, and times ``--runs``
   denoising steps at ``--size`` with guidance (batch 2), or, with real weights, whole
   ``--steps``-step generations; then it waits.
2. Its footprint: what NVML reports the child holds on the GPU (per-process memory, the reading
   the scheduler uses). Without NVML (no driver, no GPU), the benchmark says so and uses the CPU
   inventory, which reads the child's RSS.
3. Replicas packed per GPU: ``scheduler.placement.place`` on the device's free memory (read
   after the child exits, minus the scheduler's 1 GiB reserve) with that footprint.
4. Images per minute per GPU: that many replicas (at most ``--max-replicas``) load side by side
   and each makes ``--images`` images of ``--steps`` steps at once; images / wall time. With
   random weights an image is ``--steps`` transformer steps (text encoders and VAE not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import record

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "GPU_BENCH "
PRECISIONS = ("bf16", "fp8-weight-only", "fp8")
COMPILED = "+compile"  # a precision's compiled variant: "fp8+compile"
# A pipeline folder loads through Engine.load, which takes a precision policy: no weight-only row.
WEIGHTS_PRECISIONS = ("bf16", "fp8")
RESERVE_BYTES = 1 << 30  # the scheduler keeps 1 GiB free on every GPU
READY_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------------------------------------
# The replica (child process)


def variants(precisions: Sequence[str], compile_mode: str) -> list[str]:
    """The precisions, uncompiled ("off"), compiled ("on") or each both ways ("both")."""
    ways = {"off": ("",), "on": (COMPILED,), "both": ("", COMPILED)}[compile_mode]
    return [precision + way for precision in precisions for way in ways]


def _load(model: str, variant: str, device_name: str, size: int) -> tuple[Any, Any]:
    """(step function, object to keep alive) for ``model`` on the device."""
    import torch

    precision = variant.removesuffix(COMPILED)
    compiled = variant.endswith(COMPILED)
    device = torch.device(device_name)
    if model.startswith("arch:"):
        from bench.fp8_step_latency import build, fp8_mode, step_inputs
        from engine import fp8_torchao

        arch = model.removeprefix("arch:")
        transformer = build(arch)
        if precision.startswith("fp8"):
            weight_only = precision == "fp8-weight-only"
            mode = fp8_torchao.Fp8Mode.WEIGHT_ONLY if weight_only else fp8_mode(device)
            fp8_torchao.quantize_fp8(transformer, mode)  # on the CPU, as the engine does
        transformer.to(device)
        if compiled:
            # Compiles on its first call (replica() times it apart): one graph, static shapes.
            return torch.compile(transformer, dynamic=False), step_inputs
        return transformer, step_inputs
    from engine.config import ModelConfig, PrecisionPolicy
    from engine.engine import Engine

    config = ModelConfig(
        "bench",
        source=model,
        precision=PrecisionPolicy(precision),
        device=device_name,
        compile=compiled,
        compile_sizes=((size, size),),
    )
    return Engine.load(config), None


def _sync(device_name: str) -> None:
    import torch

    if device_name.startswith("cuda"):
        torch.cuda.synchronize()


def _one_image(model: Any, step_inputs: Any, device_name: str, size: int, steps: int) -> None:
    """An image: ``steps`` transformer steps (random weights) or a real generation."""
    import torch

    if step_inputs is not None:
        inputs = step_inputs(size, torch.device(device_name))
        with torch.inference_mode():
            for _ in range(steps):
                model(**inputs, return_dict=False)
        _sync(device_name)
        return
    from engine.job import GenerationSpec

    spec = GenerationSpec(
        model="bench",
        prompt="a lighthouse at dusk",
        negative_prompt="",
        width=size,
        height=size,
        steps=steps,
        guidance_scale=model.config.defaults.guidance_scale,
        seed=0,
    )
    model.generate(spec, lambda event: None, lambda: False)


def replica(model: str, precision: str, device_name: str, size: int, steps: int, runs: int) -> None:
    """Child: load, warm up, time; report; wait for ``go``; make images; report; wait to end."""
    loaded, step_inputs = _load(model, precision, device_name, size)
    samples: list[float] = []
    started = time.perf_counter()
    if step_inputs is not None:
        import torch

        from bench.fp8_step_latency import time_steps

        inputs = step_inputs(size, torch.device(device_name))
        with torch.inference_mode():
            loaded(**inputs, return_dict=False)  # the first call: compiles when compiled
        _sync(device_name)
        first_call_s = time.perf_counter() - started
        samples = time_steps(loaded, inputs, runs)
        unit = "step"
    else:
        loaded.compile_transformer()  # nothing without compile
        _one_image(loaded, None, device_name, size, 2)  # warm-up
        first_call_s = time.perf_counter() - started
        for _ in range(runs):
            started = time.perf_counter()
            _one_image(loaded, None, device_name, size, steps)
            samples.append(time.perf_counter() - started)
        unit = "image"
    _report(
        {
            "event": "loaded",
            "unit": unit,
            "samples_s": samples,
            "first_call_s": first_call_s,
            **_torch_memory(device_name),
        }
    )
    for line in sys.stdin:
        command, *args = line.split()
        if command == "go":
            started = time.time()
            for _ in range(int(args[0])):
                _one_image(loaded, step_inputs, device_name, size, steps)
            _report({"event": "done", "started": started, "ended": time.time()})
        elif command == "exit":
            return


def _torch_memory(device_name: str) -> dict[str, int]:
    import torch

    if not device_name.startswith("cuda"):
        return {}
    return {"torch_max_allocated_bytes": int(torch.cuda.max_memory_allocated())}


def _report(payload: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


# ---------------------------------------------------------------------------------------------
# The parent


class Replica:
    """A replica child process and its reports."""

    def __init__(self, model: str, precision: str, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "bench.gpu", "--replica", model, precision]
        command += ["--device", args.device, "--size", str(args.size)]
        command += ["--steps", str(args.steps), "--runs", str(args.runs)]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr = [*self.stderr[-50:], line]

    @property
    def pid(self) -> int:
        return self.process.pid

    def next_report(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        assert self.process.stdout is not None
        found: list[dict[str, Any]] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith(RESULT_PREFIX):
                    found.append(json.loads(line[len(RESULT_PREFIX) :]))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError("replica failed:\n" + "".join(self.stderr[-30:]))
        return found[0]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("exit")
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def open_inventory(device_name: str) -> tuple[Any, str]:
    """(inventory, what it is): NVML where it works, else the CPU inventory and why."""
    from scheduler.cpu_inventory import CpuInventory
    from scheduler.nvml_inventory import InventoryError, NvmlInventory

    if device_name.startswith("cuda"):
        try:
            return NvmlInventory(), "NVML"
        except InventoryError as error:
            return CpuInventory(), f"CPU inventory ({error})"
    return CpuInventory(), "CPU inventory (device is the CPU; NVML not used)"


def _device_snapshot(inventory: Any, device_name: str) -> Any:
    devices = inventory.snapshot()
    for device in devices:
        if device.engine_device == device_name or (
            device_name == "cuda" and device.engine_device == "cuda:0"
        ):
            return device
    return devices[0]


def _side_by_side(
    model: str, precision: str, args: argparse.Namespace, count: int
) -> list[dict[str, Any]]:
    """``count`` fresh replicas load side by side, then each makes ``--images`` images."""
    replicas = [Replica(model, precision, args) for _ in range(count)]
    try:
        for each in replicas:
            each.next_report()
        for each in replicas:
            each.send(f"go {args.images}")
        return [each.next_report() for each in replicas]
    finally:
        for each in replicas:
            each.stop()


def measure(model: str, precision: str, args: argparse.Namespace, inventory: Any) -> dict[str, Any]:
    from scheduler.placement import ModelDemand, device_capacities, place

    first = Replica(model, precision, args)
    done: list[dict[str, Any]] = []
    try:
        loaded = first.next_report()
        device = _device_snapshot(inventory, args.device)
        footprint = inventory.process_memory(device.id, first.pid)
        if args.max_replicas == 0:  # the quick form: this replica alone makes the images
            first.send(f"go {args.images}")
            done = [first.next_report()]
    finally:
        first.stop()
    if not footprint:
        raise RuntimeError(f"the inventory has no memory reading for the replica ({device.id})")
    device = _device_snapshot(inventory, args.device)  # after the replica has gone
    (capacity,) = device_capacities([device], RESERVE_BYTES)
    plan = place([capacity], [ModelDemand("bench", footprint, min_replicas=0)])
    packed = plan.count(device.id, "bench")
    side_by_side = max(1, min(packed, args.max_replicas))
    if not done:
        done = _side_by_side(model, precision, args, side_by_side)
    wall = max(d["ended"] for d in done) - min(d["started"] for d in done)
    images = args.images * side_by_side
    return {
        "unit": loaded["unit"],
        "latency_samples_s": loaded["samples_s"],
        "latency_median_s": record.median(loaded["samples_s"]),
        "first_call_s": loaded["first_call_s"],
        "footprint_bytes": footprint,
        "torch_max_allocated_bytes": loaded.get("torch_max_allocated_bytes"),
        "device": device.name,
        "device_total_bytes": device.total_bytes,
        "device_free_bytes": device.free_bytes,
        "replicas_packed": packed,
        "replicas_run_side_by_side": side_by_side,
        "images": images,
        "images_wall_s": wall,
        "images_per_minute": 60.0 * images / wall,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    inventory, source = open_inventory(args.device)
    print(f"memory readings: {source}")
    models = [args.weights] if args.weights else [f"arch:{arch}" for arch in args.arch]
    results: dict[str, Any] = {"memory_source": source, "models": {}}
    for model in models:
        precisions = variants(WEIGHTS_PRECISIONS if args.weights else PRECISIONS, args.compile)
        results["models"][model] = {p: measure(model, p, args, inventory) for p in precisions}
    print(record.table(table_rows(results, args)))
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(args).items()
        if key != "replica"
    }
    print(f"record: {record.write('gpu', settings, results, args.out)}")
    return results


def table_rows(results: dict[str, Any], args: argparse.Namespace) -> list[Sequence[str]]:
    rows: list[Sequence[str]] = [
        (
            "model",
            "precision",
            f"{args.size}² latency s",
            "per",
            "first call s",
            "replica GiB",
            "packed/GPU",
            "run",
            f"img/min/GPU ({args.steps} steps)",
            "latency / bf16",
        )
    ]
    for model, by_precision in results["models"].items():
        # The baseline: uncompiled bf16 (compiled bf16 with --compile on).
        bf16 = by_precision.get("bf16") or by_precision["bf16" + COMPILED]
        for precision, found in by_precision.items():
            rows.append(
                (
                    model.removeprefix("arch:"),
                    precision,
                    f"{found['latency_median_s']:.4f}",
                    found["unit"],
                    f"{found['first_call_s']:.1f}",
                    f"{found['footprint_bytes'] / 2**30:.2f}",
                    str(found["replicas_packed"]),
                    str(found["replicas_run_side_by_side"]),
                    f"{found['images_per_minute']:.1f}",
                    f"{found['latency_median_s'] / bf16['latency_median_s']:.2f}",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", default=["medium", "large"])
    parser.add_argument("--weights", help="a local diffusers or FP8 folder instead of --arch")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=2, help="images per replica side by side")
    parser.add_argument(
        "--max-replicas",
        type=int,
        default=8,
        help="most replicas run side by side; 0: the measured replica makes the images alone "
        "(one process per precision: the quick form)",
    )
    parser.add_argument(
        "--compile",
        choices=("off", "on", "both"),
        default="both",
        help="each precision uncompiled, compiled (torch.compile), or both ways",
    )
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    parser.add_argument("--replica", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replica:
        model, precision = args.replica
        replica(model, precision, args.device, args.size, args.steps, args.runs)
        return
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                "bench.gpu: CUDA is not available here; use --device cpu for its CPU form"
            )
    run(args)


if __name__ == "__main__":
    main()
