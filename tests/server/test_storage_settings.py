"""Cache and output-store settings: read from the TOML file, wrong values stop the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DEFAULT_EMBEDDING_CACHE_BYTES
from scheduler.memory_result_store import MemoryResultStore
from scheduler.redis_result_store import RedisResultStore
from server.file_output_store import FileOutputStore
from server.settings import ConfigError, ServerSettings, load_settings
from server.storage import build_output_publisher, build_result_store


def settings_from(tmp_path: Path, text: str) -> ServerSettings:
    path = tmp_path / "pointillist.toml"
    path.write_text(text)
    return load_settings(path, environ={})


def test_the_defaults_are_an_in_process_cache_and_inline_images(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "")
    assert isinstance(build_result_store(settings), MemoryResultStore)
    assert build_output_publisher(settings) is None
    assert settings.models[0].embedding_cache_bytes == DEFAULT_EMBEDDING_CACHE_BYTES


def test_every_key_is_read(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        f"""
[server]
result_cache = "redis://127.0.0.1:6379/0"
result_cache_max_mib = 8
result_cache_ttl_s = 60
output_store = "{(tmp_path / "out").as_uri()}"
output_inline = false

[[models]]
id = "demo"
embedding_cache_mib = 16
""",
    )
    store = build_result_store(settings)
    assert isinstance(store, RedisResultStore)
    assert (store.ttl_s, store.max_entry_bytes) == (60, 8 << 20)
    publisher = build_output_publisher(settings)
    assert publisher is not None and not publisher.inline
    assert isinstance(publisher.store, FileOutputStore)
    assert settings.models[0].embedding_cache_bytes == 16 << 20
    off = settings_from(tmp_path, '[server]\nresult_cache = "off"\n')
    assert build_result_store(off) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nresult_cache = "memcached://x"', "result_cache"),
        ("[server]\nresult_cache_ttl_s = 0", "result_cache_ttl_s"),
        ("[server]\noutput_inline = false", "needs an output_store"),
        ('[server]\noutput_store = "ftp://host/x"', "output_store"),
        ('[[models]]\nid = "demo"\nembedding_cache_mib = -1', "embedding_cache_mib"),
    ],
)
def test_wrong_values_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from(tmp_path, text)
