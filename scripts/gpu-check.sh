#!/usr/bin/env bash
# GPU acceptance, one command on an H100/H200 machine (issue 15): the CUDA tests, the fleet on
# real NVML with three demo replicas, and `bench gpu` at a quick size for bf16, weight-only FP8
# and W8A8 FP8, each uncompiled and compiled. Prints one table at the end; exits non-zero when
# a check failed. Budget: under 8 minutes (estimated by reading, not measured yet).
#
#   scripts/gpu-check.sh              # from the repository root, the venv in .venv (or $PYTHON)
#   GPU_CHECK_BENCH="--arch medium --size 1024 --steps 28" scripts/gpu-check.sh   # the full size
#
# Everything it writes goes under out/gpu-check/ (JUnit XML, the bench record, inductor's cache,
# kept so a second run compiles from the cache).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
out="out/gpu-check"
mkdir -p "$out"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$PWD/$out/inductor}"
# The quick size: SD3.5 Medium's architecture (random weights) at 512x512, 4 steps; the measured
# replica makes the images itself (--max-replicas 0), so each of the 6 rows is one process.
bench_args=${GPU_CHECK_BENCH:-"--arch medium --size 512 --steps 4 --runs 3 --images 2 --max-replicas 0"}
started=$SECONDS
status=0

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: torch sees no CUDA device here" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. Tests that skip without CUDA or NVML (-rs lists any skip: on a GPU there should be none).
"$python" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/cuda-tests.xml" \
  tests/engine/test_cuda.py tests/engine/test_device_memory.py || status=1
# 2. The fleet on real NVML: three demo replicas on one GPU.
"$python" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/nvml-fleet.xml" \
  tests/scheduler/test_nvml_fleet.py || status=1
# 3. bench gpu: bf16, fp8-weight-only, fp8 (W8A8 on capability >= 8.9), each with +compile.
# shellcheck disable=SC2086  # bench_args is a list of flags
"$python" -m bench gpu $bench_args --compile both --out "$out" || status=1

"$python" - "$out" "$((SECONDS - started))" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, elapsed = Path(sys.argv[1]), int(sys.argv[2])
rows = [("check", "result", "detail")]
for name, label in (("cuda-tests", "CUDA tests"), ("nvml-fleet", "fleet on NVML, 3 replicas")):
    path = out / f"{name}.xml"
    if not path.exists():
        rows.append((label, "NOT RUN", ""))
        continue
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    bad = counts["failures"] + counts["errors"]
    result = "FAIL" if bad else ("SKIPPED" if counts["skipped"] == counts["tests"] else "pass")
    rows.append((label, result, ", ".join(f"{v} {k}" for k, v in counts.items())))
record = out / "gpu.json"
if record.exists():
    results = json.loads(record.read_text())["results"]
    for model, by_precision in results["models"].items():
        base = by_precision.get("bf16") or next(iter(by_precision.values()))
        for precision, found in by_precision.items():
            ratio = found["latency_median_s"] / base["latency_median_s"]
            rows.append((
                f"bench gpu {model.removeprefix('arch:')} {precision}",
                f"{found['latency_median_s']:.4f} s/{found['unit']}",
                f"{ratio:.2f}x bf16, first call {found['first_call_s']:.0f} s, "
                f"{found['footprint_bytes'] / 2**30:.2f} GiB, {found['replicas_packed']} packed, "
                f"{found['images_per_minute']:.1f} img/min ({found['device']})",
            ))
else:
    rows.append(("bench gpu", "NOT RUN", ""))
widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
for index, row in enumerate(rows):
    print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    if index == 0:
        print("  ".join("-" * width for width in widths))
print(f"gpu-check: {elapsed} s in all")
PY
exit $status
