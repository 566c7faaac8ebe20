"""The result cache's store and the output store, built from the server settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.memory_result_store import MemoryResultStore
from scheduler.result_store import ResultStore
from server.output_store import OutputPublisher, open_output_store

if TYPE_CHECKING:
    from server.settings import ServerSettings

_MIB = 2**20


def check_storage_settings(settings: ServerSettings) -> None:
    """Raise ValueError for cache or output-store settings that cannot work."""
    cache = settings.result_cache
    if cache not in ("memory", "off") and not cache.startswith(("redis://", "rediss://")):
        raise ValueError(f"result_cache {cache!r}: use memory, off, or a redis:// (rediss://) URL")
    if settings.result_cache_max_mib <= 0 or settings.result_cache_ttl_s <= 0:
        raise ValueError("result_cache_max_mib and result_cache_ttl_s must be above 0")
    if settings.output_store:
        open_output_store(settings.output_store, settings.output_s3_endpoint_url)
    elif not settings.output_inline:
        raise ValueError("output_inline = false needs an output_store to put the images in")


def build_result_store(settings: ServerSettings) -> ResultStore | None:
    """The store ``result_cache`` names; None when the cache is off."""
    max_bytes = int(settings.result_cache_max_mib * _MIB)
    if settings.result_cache == "off":
        return None
    if settings.result_cache == "memory":
        return MemoryResultStore(max_bytes, ttl_s=settings.result_cache_ttl_s)
    from scheduler.redis_result_store import RedisResultStore

    return RedisResultStore(
        settings.result_cache, ttl_s=settings.result_cache_ttl_s, max_entry_bytes=max_bytes
    )


def build_output_publisher(settings: ServerSettings) -> OutputPublisher | None:
    """The output store ``output_store`` names, with its inline switch; None without one."""
    if not settings.output_store:
        return None
    store = open_output_store(settings.output_store, settings.output_s3_endpoint_url)
    return OutputPublisher(store, inline=settings.output_inline)
