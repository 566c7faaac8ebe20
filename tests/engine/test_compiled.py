"""The compiled transformer's dispatch (engine.compiled): shapes compiled at warm-up run the
compiled forward, every other call the eager one, and nothing compiles after the warm-up.

A tiny module and dynamo's counting backend stand in for the demo transformer and inductor, so
this runs in well under a second (the demo replica compiles in
tests/server/test_compiled_replica.py).
"""

from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounter

from engine.compiled import CompiledTransformer


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, hidden_states: torch.Tensor, return_dict: bool = False) -> torch.Tensor:
        return torch.relu(self.linear(hidden_states)) * 2


def test_compiled_shapes_run_compiled_and_others_eager_without_compiling():
    torch._dynamo.reset()
    module = Tiny()
    counter = CompileCounter()
    compiled = CompiledTransformer(module, sizes=1, backend=counter)
    small, large = torch.randn(2, 4), torch.randn(3, 4)
    expected_small, expected_large = Tiny.forward(module, small), Tiny.forward(module, large)

    with compiled.compiling(), torch.no_grad():
        assert torch.equal(module(small), expected_small)
    assert counter.frame_count == 1 and compiled.shapes

    with torch.no_grad():
        assert torch.equal(module(small), expected_small)  # the compiled graph, reused
        assert torch.equal(module(large), expected_large)  # another shape: eager
        assert torch.equal(module(large, return_dict=True), expected_large)
    assert counter.frame_count == 1  # no compilation after the warm-up
    assert (compiled.compiled_calls, compiled.eager_calls) == (2, 2)
