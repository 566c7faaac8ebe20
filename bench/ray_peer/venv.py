"""The Ray venv: Ray Serve plus the engine's own pinned dependencies, apart from pointillist's.

Ray is never a dependency of pointillist. The benchmark makes this venv on first use (a few
minutes, mostly downloads) and reuses it afterwards. torch, diffusers, transformers and the rest
of the engine's dependencies are pinned by the project's constraints.txt, so the peer runs the
very same pipeline code at the same versions; Ray's own dependencies resolve freely.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / "out" / "bench" / "ray-venv"
RAY_REQUIREMENT = "ray[serve]==2.60.0"
# Not needed by the engine: the client package and the server's gRPC add-ons.
_NOT_FOR_THE_ENGINE = ("pointillist-client", "grpcio-health-checking", "grpcio-reflection")


def engine_requirements() -> list[str]:
    """pointillist's runtime dependencies the engine needs, as pyproject.toml states them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        requirement
        for requirement in project["dependencies"]
        if not requirement.startswith(_NOT_FOR_THE_ENGINE)
    ]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def has_ray(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import ray.serve, torch, diffusers"], capture_output=True, check=False
    )
    return probe.returncode == 0


def ensure_ray_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The venv's python, creating the venv and installing Ray into it when needed."""
    if has_ray(venv):
        return venv_python(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraints = ["-c", str(REPO / "constraints.txt")]
    # torch first and pinned, as the Makefile does: a looser one would pull a CUDA build.
    subprocess.run([*pip, *constraints, "torch"], check=True)
    subprocess.run([*pip, *constraints, RAY_REQUIREMENT, *engine_requirements()], check=True)
    if not has_ray(venv):
        raise RuntimeError(f"installed Ray into {venv}, but `import ray.serve` still fails there")
    return venv_python(venv)
