"""asyncio front ends: many tasks at once on one cache."""

from __future__ import annotations

import asyncio

import etl_cache


def test_concurrent_tasks_set_get_delete(tmp_path):
    async def main():
        cache = etl_cache.AsyncLocalDiskCache(str(tmp_path), max_entries=1000)

        async def one(i: int):
            await cache.set(f"k{i}", {"i": i}, ttl_seconds=3600)
            assert await cache.get(f"k{i}") == {"i": i}
            await cache.set(f"s{i}", f"text {i}", compression="zstd")
            return await cache.get(f"s{i}")

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == [f"text {i}" for i in range(200)]
        assert await cache.delete("k0") is True
        assert await cache.get("k0") is None
        assert await cache.get_stream("k0") is None

    asyncio.run(main())


def test_async_streams_in_and_out(tmp_path):
    async def main():
        cache = etl_cache.AsyncLocalDiskCache(str(tmp_path))
        chunks = [bytes([i]) * 50_000 for i in range(20)]
        await asyncio.gather(
            cache.set("a", iter(chunks), compress=True),
            cache.set("b", iter(chunks)),
        )
        for key in ("a", "b"):
            out = [c async for c in await cache.get_stream(key, chunk_size=65536)]
            assert b"".join(out) == b"".join(chunks)

    asyncio.run(main())


def test_async_errors_are_cache_errors(tmp_path):
    async def main():
        cache = etl_cache.AsyncLocalDiskCache(str(tmp_path))
        try:
            await cache.set("", "x")
        except etl_cache.InvalidKeyError as e:
            assert "empty" in str(e)
        else:
            raise AssertionError("an empty key was accepted")

    asyncio.run(main())


def test_async_s3(s3_client, bucket):
    async def main():
        cache = etl_cache.AsyncS3Cache(bucket, client=s3_client)
        await asyncio.gather(*(cache.set(f"f/{i}", b"x" * i) for i in range(1, 30)))
        got = await asyncio.gather(*(cache.get(f"f/{i}") for i in range(1, 30)))
        assert got == [b"x" * i for i in range(1, 30)]

    asyncio.run(main())
