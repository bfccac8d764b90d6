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

    async def set_arrow(
        self,
        key: str,
        data: Any,
        ttl_seconds: float | None = None,
        compression: str = "zstd",
    ) -> None:
        """``set_arrow`` in a worker thread: the source's batches are pulled
        there (a pyarrow reader or a Polars frame may run Python code)."""
        await asyncio.to_thread(self.sync.set_arrow, key, data, ttl_seconds, compression)

    async def get_arrow(self, key: str) -> Any:
        """The Arrow data under ``key`` as a ``pyarrow.Table``, or ``None``."""
        return await asyncio.to_thread(self.sync.get_arrow, key)

    async def get_polars(self, key: str) -> Any:
        """The Arrow data under ``key`` as a ``polars.DataFrame``, or ``None``."""
        return await asyncio.to_thread(self.sync.get_polars, key)

    async def get_arrow_batches(self, key: str) -> AsyncIterator[Any] | None:
        """An async iterator over the entry's ``pyarrow.RecordBatch`` es, each
        read and decoded in a worker thread, or ``None``."""
        reader = await asyncio.to_thread(self.sync.get_arrow_batches, key)
        if reader is None:
            return None
        return _drain(iter(reader), reader.close)

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"


async def _drain(items, close=None) -> AsyncIterator[Any]:
    """The items of a blocking iterator, each fetched in a worker thread;
    ``close`` (the iterator's own ``close`` by default) runs at the end or
    when the consumer stops early."""
    done = object()
    try:
        while (item := await asyncio.to_thread(next, items, done)) is not done:
            yield item
    finally:
        (close or items.close)()


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
