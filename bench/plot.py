"""The plot of throughput against concurrency, one line per configuration, from the JSON records.

    python -m bench.plot [--out out/bench]     # reads throughput.json and ray_peer_r*.json there

Writes ``throughput.png`` beside the records (PNGs are not committed: *.png is git-ignored).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import record

RECORDS = ("throughput.json", "ray_peer_r*.json")


def series(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Configuration -> [(concurrency, images per second)] from every record found in ``out``."""
    found: dict[str, list[tuple[int, float]]] = {}
    for pattern in RECORDS:
        for path in sorted(out.glob(pattern)):
            results = json.loads(path.read_text())["results"]
            for name, cells in results.items():
                # The peer benchmark measures pointillist again; its lines are labelled apart.
                label = f"{name} ({path.stem})" if path.stem != "throughput" else name
                found[label] = sorted((int(c), cell["images_per_s"]) for c, cell in cells.items())
    return found


def plot(out: Path) -> Path:
    """Draws every series found in ``out`` into ``out/throughput.png``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    from matplotlib import pyplot

    lines = series(out)
    if not lines:
        raise FileNotFoundError(f"no throughput records ({', '.join(RECORDS)}) in {out}")
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=100)
    for label, points in lines.items():
        axes.plot([c for c, _ in points], [v for _, v in points], marker="o", label=label)
    axes.set_xscale("log", base=2)
    concurrencies = sorted({c for points in lines.values() for c, _ in points})
    axes.set_xticks(concurrencies, [str(c) for c in concurrencies])
    axes.set_xlabel("concurrent callers (closed loop)")
    axes.set_ylabel("images per second")
    axes.set_title("demo model throughput vs concurrency")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    path = out / "throughput.png"
    figure.savefig(path)
    pyplot.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT)
    print(f"plot: {plot(parser.parse_args(argv).out)}")


if __name__ == "__main__":
    main()
