"""The versions of the libraries that decide a generation's numerics.

Torch-free (read from package metadata), so the scheduler's result-cache key and the worker's
reproducibility record name exactly the same libraries. pointillist itself is one of them: its
own code (scheduler mapping, seeds, preprocessing) decides numerics too, as the proto says.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

LIBRARIES = ("torch", "diffusers", "transformers", "optimum-quanto", "pointillist")


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
