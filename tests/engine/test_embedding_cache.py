"""The replica's prompt-embedding cache: a hit skips all three text encoders, changes no byte."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from engine.embedding_cache import EmbeddingCache, EmbeddingKey, PromptEmbeddings
from engine.engine import Engine
from engine.job import GenerationOutput
from tests.engine.conftest import SpecFactory

ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


@contextmanager
def encoder_calls(engine: Engine) -> Iterator[dict[str, int]]:
    """Counts the forward calls of each of the pipeline's three text encoders while open."""
    counts = dict.fromkeys(ENCODERS, 0)
    handles = []
    for name in ENCODERS:

        def count(module: torch.nn.Module, args: Any, name: str = name) -> None:
            counts[name] += 1

        handles.append(getattr(engine.pipe, name).register_forward_pre_hook(count))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture
def engine(bf16_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The shared demo engine with an empty cache of its own for this test."""
    monkeypatch.setattr(bf16_engine, "embedding_cache", EmbeddingCache())
    return bf16_engine


def run(engine: Any, spec: Any) -> GenerationOutput:
    return engine.generate(spec, on_event=lambda event: None, should_stop=lambda: False)


def test_a_hit_skips_every_text_encoder_and_gives_the_same_bytes(
    engine: Engine, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    with encoder_calls(engine) as first_calls:
        miss = run(engine, spec)
    with encoder_calls(engine) as second_calls:
        hit = run(engine, spec)

    # Guided: the prompt and the negative prompt go through each encoder.
    assert all(count > 0 for count in first_calls.values()), first_calls
    assert second_calls == dict.fromkeys(ENCODERS, 0)
    assert not miss.timings.text_encoding_cached
    assert hit.timings.text_encoding_cached
    assert [image.data for image in hit.images] == [image.data for image in miss.images]
    assert (engine.embedding_cache.hits, engine.embedding_cache.misses) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a different prompt"},
        {"negative_prompt": "grainy"},
        {"num_images": 2},
        {"guidance_scale": 1.0},  # guidance off: no negative embeddings
    ],
)
def test_what_changes_the_embeddings_misses(
    engine: Engine, make_spec: SpecFactory, change: dict[str, Any]
) -> None:
    run(engine, make_spec())
    with encoder_calls(engine) as calls:
        output = run(engine, make_spec(**change))

    assert calls["text_encoder_3"] > 0
    assert not output.timings.text_encoding_cached


def test_what_does_not_change_the_embeddings_hits(engine: Engine, make_spec: SpecFactory) -> None:
    run(engine, make_spec())
    with encoder_calls(engine) as calls:
        output = run(engine, make_spec(seed=5, steps=2, width=96))

    assert calls == dict.fromkeys(ENCODERS, 0)
    assert output.timings.text_encoding_cached


def test_batch_members_each_take_their_embeddings_from_the_cache_or_the_encoders(
    engine: Engine, make_spec: SpecFactory
) -> None:
    known, fresh = make_spec(), make_spec(prompt="a red fox in the snow", seed=99)
    alone = [run(engine, known), run(EngineWithEmptyCache(engine), fresh)]
    # Only `known` is in the cache now (the second run used a separate, discarded cache).
    with encoder_calls(engine) as calls:
        outcomes = engine.generate_batch(
            [known, fresh], lambda index, event: None, lambda index: False
        )

    # One member encoded: T5 ran twice (prompt and negative), for `fresh` alone.
    assert calls["text_encoder_3"] == 2
    batched = [outcome for outcome in outcomes if isinstance(outcome, GenerationOutput)]
    assert [output.timings.text_encoding_cached for output in batched] == [True, False]
    assert [o.images[0].data for o in batched] == [o.images[0].data for o in alone]


class EngineWithEmptyCache:
    """Runs ``engine`` once with a throwaway cache, leaving the engine's own cache as it was."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def generate(self, spec: Any, on_event: Any, should_stop: Any) -> GenerationOutput:
        kept = self.engine.embedding_cache
        self.engine.embedding_cache = EmbeddingCache()
        try:
            return self.engine.generate(spec, on_event, should_stop)
        finally:
            self.engine.embedding_cache = kept


def embeddings(megabytes: int) -> PromptEmbeddings:
    values = torch.zeros(megabytes << 18)  # float32: 4 bytes each
    return PromptEmbeddings(values, torch.zeros(1), None, None)


def key(prompt: str) -> EmbeddingKey:
    return EmbeddingKey("demo", "rev", prompt, None, 1, 256)


def test_the_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used() -> None:
    cache = EmbeddingCache(max_bytes=3 << 20)
    cache.put(key("a"), embeddings(1))
    cache.put(key("b"), embeddings(1))
    assert cache.get(key("a")) is not None  # "b" is now the least recently used
    cache.put(key("c"), embeddings(1))

    assert cache.get(key("b")) is None
    assert cache.get(key("a")) is not None and cache.get(key("c")) is not None
    assert cache.bytes_used <= 3 << 20
    cache.put(key("huge"), embeddings(4))  # larger than the whole cache: not kept
    assert cache.get(key("huge")) is None and len(cache) == 2


def test_a_cache_of_zero_bytes_keeps_nothing() -> None:
    cache = EmbeddingCache(max_bytes=0)
    cache.put(key("a"), embeddings(1))
    assert cache.get(key("a")) is None and cache.bytes_used == 0


def test_an_entry_is_a_private_copy(engine: Engine) -> None:
    original = embeddings(1)
    engine.embedding_cache.put(key("a"), original)
    original.prompt.add_(1.0)  # a later in-place change of the caller's tensors
    entry = engine.embedding_cache.get(key("a"))
    assert entry is not None and float(entry.prompt.max()) == 0.0
