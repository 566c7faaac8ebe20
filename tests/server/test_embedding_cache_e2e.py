"""The replica's prompt-embedding cache seen from a client: the timings say hit or miss."""

from __future__ import annotations

import uuid

from pointillist import Client
from server.background import ServerThread
from tests.server.test_result_cache import QUICK


def test_a_repeated_prompt_is_encoded_once_and_the_result_says_so(
    demo_server: ServerThread,
) -> None:
    prompt = f"a lighthouse at dusk {uuid.uuid4().hex[:8]}"
    with Client(demo_server.address) as client:
        first = client.generate(prompt, seed=1, **QUICK)
        second = client.generate(prompt, seed=2, **QUICK)  # another image, the same prompt
        other = client.generate(prompt + "!", seed=2, **QUICK)

    assert not first.timings.text_encoding_cached
    assert second.timings.text_encoding_cached
    assert not other.timings.text_encoding_cached
    assert not (first.cached or second.cached)  # the result cache is not involved
