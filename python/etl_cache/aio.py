"""asyncio front ends: the same caches, awaitable.

Whole values (``str``, ``bytes``, ``dict``, ``list``) are read and written on
the engine's own runtime and complete an asyncio future: the event loop never
waits on the disk or the network. Iterator payloads and streamed reads pull
Python objects, so they run in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from etl_cache._native import BaseCache, LocalDiskCache, S3Cache, open

_WHOLE = (str, bytes, bytearray, memoryview, dict, list)


class AsyncCache:
    """Awaitable ``set``/``get``/``get_stream``/``delete`` over any of the
    engine's caches (``LocalDiskCache``, ``S3Cache``, what ``open`` returns);
    a cache of your own written in Python is not one of them."""

    def __init__(self, cache: BaseCache):
        self.sync = cache

    async def set(
        self,
        key: str,
        payload: Any,
        ttl_seconds: float | None = None,
        compress: bool = False,
        compression: str | None = None,
    ) -> None:
        if isinstance(payload, _WHOLE):
            await self.sync.aset(key, payload, ttl_seconds, compress, compression)
        else:
            await asyncio.to_thread(
                self.sync.set, key, payload, ttl_seconds, compress, compression
            )

    async def get(self, key: str) -> Any:
        return await self.sync.aget(key)

    async def delete(self, key: str) -> bool:
        return await self.sync.adelete(key)

    async def get_stream(
        self, key: str, chunk_size: int = 65536
    ) -> AsyncIterator[bytes] | None:
        chunks = await asyncio.to_thread(self.sync.get_stream, key, chunk_size)
        if chunks is None:
            return None
        return _drain(chunks)

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"


async def _drain(chunks) -> AsyncIterator[bytes]:
    done = object()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk
    finally:
        chunks.close()


class AsyncLocalDiskCache(AsyncCache):
    """``LocalDiskCache`` with awaitable methods; same arguments."""

    def __init__(self, cache_dir: str = ".cache", max_entries: int | None = None, **kwargs):
        super().__init__(LocalDiskCache(cache_dir, max_entries, **kwargs))


class AsyncS3Cache(AsyncCache):
    """``S3Cache`` with awaitable methods; same arguments."""

    def __init__(self, bucket_name: str, client: Any = None, **kwargs):
        super().__init__(S3Cache(bucket_name, client, **kwargs))


def aopen(url: str, options: dict | None = None, **kwargs) -> AsyncCache:
    """``etl_cache.open`` with awaitable methods."""
    return AsyncCache(open(url, options, **kwargs))
