"""The result cache's parts without a server: its key, its codec, its in-process store."""

from __future__ import annotations

import dataclasses

import pytest

from engine.job import (
    ComponentPrecision,
    DeviceInfo,
    EncodedImage,
    GenerationOutput,
    GenerationSpec,
    ImageFormat,
    LoadedModel,
    PreviewSettings,
    Provenance,
    Timings,
)
from engine.library_versions import library_versions
from scheduler.memory_result_store import MemoryResultStore
from scheduler.result_codec import CorruptEntryError, decode_output, encode_output
from scheduler.result_key import produced_by, result_key

SPEC = GenerationSpec(
    model="demo",
    prompt="a lighthouse",
    negative_prompt="",
    width=64,
    height=64,
    steps=2,
    guidance_scale=4.5,
    seed=7,
)
PRECISIONS = (ComponentPrecision("transformer", "bf16", "bf16"),)
CPU = DeviceInfo(kind="cpu", id="cpu", name="Some CPU")
LOADED = LoadedModel("demo", PRECISIONS, "auto", CPU, "sha256-abc")


def output(images: tuple[EncodedImage, ...] = ()) -> GenerationOutput:
    provenance = Provenance("demo", "sha256-abc", PRECISIONS, "Euler", library_versions(), CPU)
    return GenerationOutput(images, Timings(denoising_s=1.5, total_s=2.0), provenance)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a lighthouse!"},
        {"negative_prompt": "x"},
        {"width": 80},
        {"height": 80},
        {"steps": 3},
        {"guidance_scale": 4.0},
        {"seed": 8},
        {"num_images": 2},
        {"output_format": ImageFormat.JPEG},
        {"quality": 50},
        {"model": "other"},
    ],
)
def test_every_generation_parameter_is_in_the_key(change: dict[str, object]) -> None:
    assert result_key(dataclasses.replace(SPEC, **change), LOADED) != result_key(SPEC, LOADED)  # type: ignore[arg-type]


def test_previews_are_not_in_the_key() -> None:
    with_previews = dataclasses.replace(SPEC, preview=PreviewSettings(every_n_steps=1))
    assert result_key(with_previews, LOADED) == result_key(SPEC, LOADED)


@pytest.mark.parametrize(
    "change",
    [
        {"weights_revision": "sha256-def"},
        {"precisions": (ComponentPrecision("transformer", "fp8_e4m3", "bf16"),)},
        {"device": DeviceInfo(kind="cuda", id="GPU-1", name="NVIDIA H100")},
    ],
)
def test_the_weights_precision_and_device_are_in_the_key(change: dict[str, object]) -> None:
    other = dataclasses.replace(LOADED, **change)  # type: ignore[arg-type]
    assert result_key(SPEC, other) != result_key(SPEC, LOADED)
    assert not produced_by(output().provenance, other)
    assert produced_by(output().provenance, LOADED)


def test_the_codec_round_trips_images_timings_and_provenance() -> None:
    images = (
        EncodedImage(b"\x89PNG first", "image/png", 64, 64, seed=7),
        EncodedImage(b"", "image/png", 64, 64, seed=8),
        EncodedImage(bytes(range(256)) * 10, "image/webp", 32, 48, seed=2**64 - 1),
    )
    original = output(images)
    assert decode_output(encode_output(original)) == original


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00\x05{bad}",
        encode_output(output())[:-1] + b"x",
        encode_output(output())[:6],
    ],
)
def test_bytes_the_codec_did_not_write_are_rejected(data: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode_output(data)


def test_a_cut_short_entry_is_rejected() -> None:
    data = encode_output(output((EncodedImage(b"12345", "image/png", 1, 1),)))
    with pytest.raises(CorruptEntryError):
        decode_output(data[:-1])
    with pytest.raises(CorruptEntryError):
        decode_output(data + b"!")


async def test_the_memory_store_is_bounded_in_bytes_least_recently_used_first() -> None:
    store = MemoryResultStore(max_bytes=10)
    await store.put("a", b"aaaa")
    await store.put("b", b"bbbb")
    assert await store.get("a") == b"aaaa"  # "b" is now the least recently used
    await store.put("c", b"cccc")

    assert await store.get("b") is None
    assert await store.get("a") == b"aaaa" and await store.get("c") == b"cccc"
    assert store.bytes_used == 8
    await store.put("huge", b"x" * 11)  # larger than the whole store: not kept
    assert await store.get("huge") is None and len(store) == 2


async def test_the_memory_store_forgets_entries_older_than_its_ttl() -> None:
    store = MemoryResultStore(max_bytes=100, ttl_s=0.0)
    await store.put("a", b"a")
    assert await store.get("a") is None and store.bytes_used == 0
