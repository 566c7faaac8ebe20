"""Weight bytes of the demo pipeline per component, FP8 policy against bf16.

python -m bench.fp8_weight_bytes
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench import record
from engine import fp8
from engine.config import PrecisionPolicy, demo_model_config
from engine.engine import Engine

COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def run(out: Path) -> dict[str, dict[str, int]]:
    sizes: dict[str, dict[str, int]] = {}
    for policy in (PrecisionPolicy.BF16, PrecisionPolicy.FP8):
        config = dataclasses.replace(demo_model_config(), precision=policy, device="cpu")
        pipe = Engine.load(config).pipe
        sizes[policy.value] = {
            name: fp8.weight_bytes(getattr(pipe, name))
            for name in COMPONENTS
            if getattr(pipe, name, None) is not None
        }
        sizes[policy.value]["pipeline"] = sum(sizes[policy.value].values())
    rows = [("component", "bf16 bytes", "fp8 bytes", "fp8 / bf16")]
    for name, bf16_bytes in sizes["bf16"].items():
        fp8_bytes = sizes["fp8"][name]
        rows.append((name, f"{bf16_bytes:,}", f"{fp8_bytes:,}", f"{fp8_bytes / bf16_bytes:.2f}"))
    print(record.table(rows))
    print(f"record: {record.write('fp8_weight_bytes', {'model': 'demo'}, sizes, out)}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    run(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
