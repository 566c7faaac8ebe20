"""A transformer run under ``torch.compile`` for the shapes compiled at warm-up, eager otherwise.

A model with ``compile = true`` (``engine.config.ModelConfig``) gets one compiled graph per
resolution in its ``compile_sizes``, made during the replica's warm-up, before it reports ready
(``engine.engine.Engine.warm_up``). The graphs are for the transformer call of a lone one-image
request at that size (the replica is not batched: ``scheduler.fleet``); any other call (another
size, more images, guidance off, a batch) runs the eager transformer, the very same module and
weights, so no request ever waits for a compilation.

``dynamic=False``: each shape is its own graph (static shapes are what inductor optimizes best,
and what CUDA graphs would need). Inductor's FX-graph and AOTAutograd caches, kept in
``TORCHINDUCTOR_CACHE_DIR`` (set by the scheduler from ``[scheduler] compile_cache_dir``),
make a restarted replica's warm-up skip code generation; dynamo still traces.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

# A few graphs per size (text-to-image and inpainting may guard differently) on top of the
# default: past ``recompile_limit`` dynamo stops compiling a code object and runs it eagerly.
GRAPHS_PER_SIZE = 2


class CompiledTransformer:
    """Installed as ``transformer.forward`` (an instance attribute; ``nn.Module.__call__`` calls
    it): dispatches each call to the compiled forward when its shapes were compiled at warm-up,
    else to the eager forward it keeps a reference to."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        sizes: int,
        backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        self.eager: Callable[..., Any] = transformer.forward
        self.compiled: Callable[..., Any] = torch.compile(
            self.eager, dynamic=False, backend=backend
        )
        limit = max(torch._dynamo.config.recompile_limit, GRAPHS_PER_SIZE * sizes + 1)
        torch._dynamo.config.recompile_limit = limit
        self.shapes: set[Hashable] = set()
        self.compiled_calls = 0
        self.eager_calls = 0
        self._compiling = False
        transformer.forward = self

    @contextlib.contextmanager
    def compiling(self) -> Iterator[None]:
        """Within: every call runs (and, the first time for its shapes, compiles) the compiled
        forward, and its shapes count as compiled afterwards. Only the warm-up uses this."""
        self._compiling = True
        try:
            yield
        finally:
            self._compiling = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = shape_key(args, kwargs)
        if self._compiling:
            # The only place a compilation (or a recompilation for new guards) may happen.
            self.shapes.add(key)
            self.compiled_calls += 1
            return self.compiled(*args, **kwargs)
        if key in self.shapes:
            self.compiled_calls += 1
            # A call whose guards fail after all (a case the warm-up missed) would recompile
            # here, mid-request: this stance runs such a call eagerly instead.
            with torch.compiler.set_stance("eager_on_recompile"):
                return self.compiled(*args, **kwargs)
        self.eager_calls += 1
        return self.eager(*args, **kwargs)


def shape_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """What a static-shape graph is specialized on: each tensor's shape, dtype and device, and
    other arguments by value (dynamo guards on Python constants too)."""
    items = [(str(index), value) for index, value in enumerate(args)]
    items += sorted(kwargs.items())
    return tuple((name, _value_key(value)) for name, value in items)


def _value_key(value: Any) -> Hashable:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device)
    if isinstance(value, list | tuple):
        return tuple(_value_key(item) for item in value)
    if isinstance(value, dict):
        return tuple((key, _value_key(item)) for key, item in sorted(value.items()))
    return repr(value)
