"""A replica's cache of text-encoder outputs, so a repeated prompt skips CLIP-L, CLIP-G and T5.

SD3's ``encode_prompt`` runs three text encoders (T5-XXL alone has 4.7B parameters) for every
request. Their outputs depend only on the encoders' weights and precision, the prompt, the
negative prompt, whether guidance is on (no negative embeddings without it), the number of images
(the embeddings are repeated per image) and the token limit, so those are the key.

Entries are kept on the CPU, never on the GPU: the replica's measured footprint (taken after
warm-up, with an empty cache) must stay true, and moving a few MiB to the device on a hit costs
far less than running the encoders. The cache is bounded in bytes and evicts the least recently
used entry first. One engine runs one call at a time, so no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from engine.config import DEFAULT_EMBEDDING_CACHE_BYTES


@dataclass(frozen=True)
class EmbeddingKey:
    """Everything that changes what the text encoders return for a request."""

    model_id: str
    # The weights' revision and the text encoders' precisions: other weights, other outputs.
    encoder_identity: str
    prompt: str
    negative_prompt: str | None  # None when guidance is off: no negative embeddings then
    num_images: int
    max_sequence_length: int


@dataclass(frozen=True)
class PromptEmbeddings:
    """What ``StableDiffusion3Pipeline.encode_prompt`` returns, by name."""

    prompt: torch.Tensor
    pooled: torch.Tensor
    negative: torch.Tensor | None
    negative_pooled: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        parts = (self.prompt, self.pooled, self.negative, self.negative_pooled)
        return [tensor for tensor in parts if tensor is not None]

    def nbytes(self) -> int:
        return sum(tensor.element_size() * tensor.nelement() for tensor in self.tensors())

    def to(self, device: torch.device) -> PromptEmbeddings:
        """A copy on ``device`` (the same tensors when they are already there)."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        prompt, pooled = move(self.prompt), move(self.pooled)
        assert prompt is not None and pooled is not None
        return PromptEmbeddings(prompt, pooled, move(self.negative), move(self.negative_pooled))

    def detached_copy_on_cpu(self) -> PromptEmbeddings:
        """A private CPU copy, so later in-place use of the originals cannot change the entry."""

        def copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().to("cpu", copy=True)

        prompt, pooled = copy(self.prompt), copy(self.pooled)
        assert prompt is not None and pooled is not None
        return PromptEmbeddings(prompt, pooled, copy(self.negative), copy(self.negative_pooled))


class EmbeddingCache:
    """LRU of PromptEmbeddings bounded by ``max_bytes`` (0 turns the cache off)."""

    def __init__(self, max_bytes: int = DEFAULT_EMBEDDING_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[EmbeddingKey, PromptEmbeddings] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: EmbeddingKey) -> PromptEmbeddings | None:
        """The entry for ``key`` (now the most recently used), or None; counts hits and misses."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: EmbeddingKey, embeddings: PromptEmbeddings) -> None:
        """Keep a CPU copy of ``embeddings``; evicts the oldest entries to stay in bounds. An
        entry larger than the whole bound is not kept."""
        size = embeddings.nbytes()
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes()
        self._entries[key] = embeddings.detached_copy_on_cpu()
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes()
