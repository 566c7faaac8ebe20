"""FP8 memory at real SD3.5 sizes: weight bytes, a replica's resident memory, its load peak.

    python -m bench.fp8_memory                  # SD3.5 Medium replicas + Large weight bytes
    python -m bench.fp8_memory --arch tiny      # the smoke test's size

A random-weight transformer of the chosen architecture (bench/fp8_step_latency.py, no download)
replaces the demo pipeline's, and that pipeline is saved as a bf16 diffusers folder in a temporary
directory. ``pointillist quantize``'s own code (engine/fp8_checkpoint.py) turns it into an FP8
checkpoint. Then a replica is loaded three ways, each in a fresh child process, one at a time,
through ``Engine.load`` (what a worker does): bf16 from the bf16 folder, FP8 quantized at load
from the bf16 folder, and FP8 from the FP8 checkpoint. Each child reports its RSS after loading
(resident) and ``ru_maxrss`` (the peak while loading). The demo's text encoders and VAE are tiny,
so the figures are the transformer's plus the process's own floor (torch and diffusers imported),
which is reported too. The temporary folders are deleted afterwards.

Large's weight bytes come from a meta-device build (no memory): bf16 counts every parameter and
buffer at its dtype, FP8 counts what torchao's weight-only FP8 stores (one byte per Linear weight
plus an fp32 scale per output row; everything else 16-bit), checked against the real quantized
Medium.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import record

# The goal: loading an FP8 checkpoint peaks at most this much above the loaded replica.
PEAK_GOAL = 1.1
WAYS = {
    "bf16": ("bf16", "bf16 folder, bf16 replica"),
    "quantize-at-load": ("fp8", "bf16 folder, FP8 quantized at load"),
    "fp8-checkpoint": ("fp8", "FP8 checkpoint (pointillist quantize)"),
}
RESULT_PREFIX = "FP8_MEMORY_RESULT "
REPO = Path(__file__).resolve().parents[1]


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_write_bf16(arch: str, folder: Path) -> dict[str, Any]:
    """The demo pipeline with a random transformer of ``arch``, saved in bf16."""
    import torch

    from engine import fp8
    from engine.demo import build_demo_pipeline

    pipe = build_demo_pipeline()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            torch.nn.Module.to(component, dtype=torch.bfloat16)
    from bench.fp8_step_latency import build

    pipe.transformer = build(arch)
    parameters = sum(p.numel() for p in pipe.transformer.parameters())
    weight_bytes = fp8.weight_bytes(pipe.transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return {"parameters": parameters, "transformer_bf16_bytes": weight_bytes}


def child_quantize(source: Path, dest: Path) -> dict[str, Any]:
    from engine.fp8_checkpoint import quantize_checkpoint

    started = time.perf_counter()
    quantize_checkpoint(str(source), dest)
    return {"seconds": time.perf_counter() - started}


def _memory_status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process in bytes (Linux /proc)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0]) * 1024
    return found


class _Sampler:
    """The largest RssAnon seen while loading (sampled every 10 ms; ru_maxrss has no anon part)."""

    def __init__(self) -> None:
        import threading

        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_anon = max(self.peak_anon, _memory_status().get("RssAnon", 0))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak_anon, _memory_status().get("RssAnon", 0))


def _touch_every_weight(module: Any) -> None:
    """Reads every byte of every weight once, so weights mapped from the file but not yet read
    (safetensors loads lazily through mmap) are resident, as they are after a first step."""
    import torch
    from optimum.quanto.tensor import QTensor

    from engine import fp8_torchao

    def touch(tensor: torch.Tensor) -> None:
        # Quanto's and torchao's FP8 tensors are wrappers: read their inner data and scales.
        if isinstance(tensor, QTensor) or fp8_torchao.is_fp8_weight(tensor):
            wrapper: Any = tensor  # neither library types its wrapper's fields
            for name in wrapper.__tensor_flatten__()[0]:
                touch(getattr(tensor, name))
            return
        flat = tensor.detach()
        if flat.element_size() == 1:
            flat = flat.view(torch.uint8)  # count_nonzero has no float8 kernel
        torch.count_nonzero(flat)

    with torch.inference_mode():
        for tensor in [*module.parameters(), *module.buffers()]:
            touch(tensor)


def child_load(folder: Path, precision: str) -> dict[str, Any]:
    """A replica's load, as a worker does it; RSS before, after, and at the peak.

    Resident is measured after every weight has been read once (see _touch_every_weight):
    without that, weights still only mapped from the checkpoint file would not count.
    """
    from engine import fp8, fp8_torchao
    from engine.config import ModelConfig, PrecisionPolicy
    from engine.engine import Engine

    floor = _rss()
    sampler = _Sampler()
    started = time.perf_counter()
    engine = Engine.load(
        ModelConfig("bench", source=str(folder), precision=PrecisionPolicy(precision), device="cpu")
    )
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    peak_anon = sampler.stop()
    untouched = _rss()
    _touch_every_weight(engine.pipe.transformer)
    status = _memory_status()
    # Resident is read after the touch, so the peak must include it too (ru_maxrss only grows):
    # reading torchao's FP8 tensors can add a few pages beyond the load's own peak.
    peak = max(peak, _peak_rss())
    return {
        "floor_rss_bytes": floor,
        "loaded_untouched_rss_bytes": untouched,
        "resident_rss_bytes": status["VmRSS"],
        "resident_anon_bytes": status.get("RssAnon", 0),
        "resident_file_bytes": status.get("RssFile", 0),
        "peak_rss_bytes": peak,
        "peak_anon_bytes": peak_anon,
        "load_s": seconds,
        "transformer_bytes": fp8.weight_bytes(engine.pipe.transformer),
        "transformer_fp8": fp8.is_fp8_quantized(engine.pipe.transformer)
        or fp8_torchao.is_fp8_quantized(engine.pipe.transformer),
    }


def _run_child(*args: str) -> dict[str, Any]:
    """One step in a fresh process (one at a time: the parent holds no weights)."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.fp8_memory", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            found: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return found
    raise RuntimeError(
        f"child {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr[-4000:]}"
    )


def meta_weight_bytes(arch: str) -> dict[str, int]:
    """Parameters, bf16 bytes and qfloat8 bytes of ``arch``, built on the meta device."""
    import torch
    from accelerate import init_empty_weights
    from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel

    from bench.fp8_step_latency import ARCHITECTURES, SHARED

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        # Buffers stay real (the positional grid is computed in __init__), parameters are meta.
        with init_empty_weights():
            model = SD3Transformer2DModel(**SHARED, **ARCHITECTURES[arch])
    finally:
        torch.set_default_dtype(previous)
    parameters = sum(p.numel() for p in model.parameters())
    bf16 = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    fp8 = bf16
    for module in model.modules():
        # torchao's Float8WeightOnlyConfig stores Linear weights (not convolutions) as
        # float8_e4m3fn (1 byte) plus an fp32 scale per output row, in place of 2-byte weights.
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            fp8 -= weight.numel() * weight.element_size()
            fp8 += weight.numel() + weight.shape[0] * 4
    return {"parameters": parameters, "bf16_bytes": bf16, "fp8_bytes": fp8}


def run(
    arch: str,
    meta_archs: list[str],
    out: Path,
    workdir: Path | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """``keep``: write the checkpoints there (or reuse the ones there) and do not delete them."""
    results: dict[str, Any] = {"arch": arch, "loads": {}, "meta": {}}
    scratch = keep or Path(tempfile.mkdtemp(prefix="fp8-memory-", dir=workdir))
    try:
        bf16_folder, fp8_folder = scratch / "bf16", scratch / "fp8"
        if keep is not None and (fp8_folder / "pointillist_fp8.json").is_file():
            results["written"] = json.loads((scratch / "written.json").read_text())
            results["quantize"] = {"reused": str(fp8_folder)}
        else:
            results["written"] = _run_child("write-bf16", arch, str(bf16_folder))
            (scratch / "written.json").write_text(json.dumps(results["written"]))
            results["quantize"] = _run_child("quantize", str(bf16_folder), str(fp8_folder))
        for way, (precision, _) in WAYS.items():
            folder = fp8_folder if way == "fp8-checkpoint" else bf16_folder
            results["loads"][way] = _run_child("load", str(folder), precision)
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    for name in meta_archs:
        results["meta"][name] = meta_weight_bytes(name)
    _print(results)
    settings = {"arch": arch, "meta_archs": meta_archs, "peak_goal": PEAK_GOAL}
    print(f"record: {record.write('fp8_memory', settings, results, out)}")
    return results


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def _above_floor(load: dict[str, Any], key: str = "resident_rss_bytes") -> float:
    # At least one page, so a tiny smoke-test model never divides by zero.
    return max(4096.0, float(load[key] - load["floor_rss_bytes"]))


def _print(results: dict[str, Any]) -> None:
    loads = results["loads"]
    params = results["written"]["parameters"]
    print(f"{results['arch']} transformer ({params / 1e9:.2f}B parameters, random weights), CPU")
    rows = [
        (
            "replica loaded from",
            "transformer GB",
            "floor GB",
            "resident GB",
            "anon+file GB",
            "peak GB",
            "peak anon GB",
            "peak/resident",
            "load s",
        )
    ]
    for way, (_, label) in WAYS.items():
        found = loads[way]
        rows.append(
            (
                label,
                _gb(found["transformer_bytes"]),
                _gb(found["floor_rss_bytes"]),
                _gb(found["resident_rss_bytes"]),
                f"{_gb(found['resident_anon_bytes'])}+{_gb(found['resident_file_bytes'])}",
                _gb(found["peak_rss_bytes"]),
                _gb(found["peak_anon_bytes"]),
                f"{found['peak_rss_bytes'] / found['resident_rss_bytes']:.2f}",
                f"{found['load_s']:.1f}",
            )
        )
    print(record.table(rows))
    bf16, quantized, checkpoint = (loads[way] for way in WAYS)
    ratios = [
        ("ratio", "value", "goal"),
        (
            "resident, FP8 checkpoint / bf16",
            f"{checkpoint['resident_rss_bytes'] / bf16['resident_rss_bytes']:.2f}",
            "",
        ),
        (
            "peak, quantize-at-load / bf16 resident",
            f"{quantized['peak_rss_bytes'] / bf16['resident_rss_bytes']:.2f}",
            "",
        ),
        (
            "peak, FP8 checkpoint / FP8 resident",
            f"{checkpoint['peak_rss_bytes'] / checkpoint['resident_rss_bytes']:.2f}",
            f"<= {PEAK_GOAL}",
        ),
        (
            "same, above the floor: (peak - floor) / (resident - floor)",
            f"{_above_floor(checkpoint, 'peak_rss_bytes') / _above_floor(checkpoint):.2f}",
            f"<= {PEAK_GOAL}",
        ),
        (
            "peak, FP8 checkpoint / quantize-at-load peak",
            f"{checkpoint['peak_rss_bytes'] / quantized['peak_rss_bytes']:.2f}",
            "",
        ),
    ]
    print(record.table(ratios))
    if results["meta"]:
        meta_rows = [("transformer (meta build)", "params", "bf16 GB", "fp8 GB", "fp8/bf16")]
        for name, found in results["meta"].items():
            meta_rows.append(
                (
                    name,
                    f"{found['parameters'] / 1e9:.2f}B",
                    _gb(found["bf16_bytes"]),
                    _gb(found["fp8_bytes"]),
                    f"{found['fp8_bytes'] / found['bf16_bytes']:.2f}",
                )
            )
        print(record.table(meta_rows))


def _child(args: list[str]) -> None:
    step, *rest = args
    if step == "write-bf16":
        found = child_write_bf16(rest[0], Path(rest[1]))
    elif step == "quantize":
        found = child_quantize(Path(rest[0]), Path(rest[1]))
    elif step == "load":
        found = child_load(Path(rest[0]), rest[1])
    else:
        raise SystemExit(f"unknown child step {step}")
    found.setdefault("peak_rss_bytes", _peak_rss())
    print(RESULT_PREFIX + json.dumps(found), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=["tiny", "medium", "large"], default="medium")
    parser.add_argument(
        "--meta", nargs="*", choices=["medium", "large"], default=["medium", "large"]
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep (or reuse) the checkpoints in this folder"
    )
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return
    run(args.arch, args.meta, args.out, args.workdir, args.keep)


if __name__ == "__main__":
    main()
