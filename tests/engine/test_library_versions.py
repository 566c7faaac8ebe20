"""The reproducibility record names pointillist's own version, as the proto promises."""

from __future__ import annotations

from importlib import metadata

from engine.library_versions import library_versions


def test_pointillist_itself_is_included() -> None:
    versions = library_versions()
    assert versions["pointillist"] == metadata.version("pointillist")
    assert versions["pointillist"] != "not installed"


def test_every_numerics_library_is_named() -> None:
    assert set(library_versions()) == {
        "torch",
        "diffusers",
        "transformers",
        "torchao",
        "optimum-quanto",
        "pointillist",
    }
