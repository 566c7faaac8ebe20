"""The versions of the libraries that decide a generation's numerics.

Torch-free (read from package metadata), so the scheduler's result-cache key and the worker's
reproducibility record name exactly the same libraries. pointillist itself is one of them: its
own code (scheduler mapping, seeds, preprocessing) decides numerics too, as the proto says.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

# torchao quantizes FP8 (and its kernels decide W8A8 numerics); optimum-quanto reads old folders.
LIBRARIES = ("torch", "diffusers", "transformers", "torchao", "optimum-quanto", "pointillist")


@cache
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a generation's numerics."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
