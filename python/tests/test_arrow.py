"""Arrow tables in and out: pyarrow and Polars data stored as Arrow IPC
files (kind ``arrow``), the same entries a Rust service writes and reads
with ``etl_cache::arrow``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest

try:
    import polars as pl
    import pyarrow as pa
    import pyarrow.ipc
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs them (scripts/install-test-servers.sh)
    pytest.skip("pyarrow and polars are not installed", allow_module_level=True)

from etl_cache import (  # noqa: E402
    AsyncLocalDiskCache,
    CacheError,
    CorruptEntryError,
    LocalDiskCache,
    StreamError,
)
from test_engine import _run  # noqa: E402


def _table(n: int = 1000, seed: int = 0) -> pa.Table:
    """A table of several column types, nulls included, with metadata."""
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("city", pa.string()),
            pa.field("amount", pa.float64()),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("kind", pa.dictionary(pa.int32(), pa.string())),
        ],
        metadata={b"source": b"orders"},
    )
    cities = ["Lyon", None, "Köln", "Porto"]
    return pa.table(
        {
            "id": pa.array(range(seed, seed + n), pa.int64()),
            "city": [cities[(i + seed) % 4] for i in range(n)],
            "amount": [None if i % 7 == 0 else i * 1.5 + seed for i in range(n)],
            "at": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * n,
            "tags": [["a", "b"][: i % 3] for i in range(n)],
            "kind": pa.array([["x", "y"][i % 2] for i in range(n)]).dictionary_encode(),
        },
        schema=schema,
    )


def test_a_table_comes_back_equal_with_its_schema_and_metadata(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    t = _table()
    cache.set_arrow("orders", t, ttl_seconds=3600)
    back = cache.get_arrow("orders")
    assert back.schema == t.schema
    assert back.schema.metadata == {b"source": b"orders"}
    assert back.equals(t)
    # Each IPC body compression reads back; another name is refused.
    for compression in ("lz4", "none", "zstd"):
        cache.set_arrow("orders", t, compression=compression)
        assert cache.get_arrow("orders").equals(t)
    with pytest.raises(ValueError, match="compression"):
        cache.set_arrow("orders", t, compression="gzip")
    assert cache.get_arrow("missing") is None
    assert cache.get_arrow_batches("missing") is None
    assert cache.get_polars("missing") is None


def test_batches_and_readers_in_and_out(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    t = _table(50)
    batch = t.to_batches()[0]
    cache.set_arrow("one_batch", batch)
    assert cache.get_arrow("one_batch").equals(pa.Table.from_batches([batch]))
    # A reader fed by a Python generator is pulled as the cache writes.
    pulled = []

    def batches():
        for i in range(30):
            pulled.append(i)
            yield _table(100, seed=i * 100).to_batches()[0]

    reader = pa.RecordBatchReader.from_batches(t.schema, batches())
    cache.set_arrow("streamed", reader)
    assert pulled == list(range(30))
    # A reader of one cache is the source of a write to another (each
    # blocks on the engine's runtime: the source is pulled outside it).
    other = LocalDiskCache(str(tmp_path / "other"))
    other.set_arrow("copied", cache.get_arrow_batches("streamed"))
    assert other.get_arrow("copied").equals(cache.get_arrow("streamed"))
    out = cache.get_arrow_batches("streamed")
    assert isinstance(out, pa.RecordBatchReader)
    assert out.schema == t.schema
    got = list(out)
    assert len(got) == 30
    assert pa.Table.from_batches(got).column("id").to_pylist() == list(range(3000))


def test_polars_frames_in_and_out(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    df = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "city": ["Lyon", None, "Porto"],
            "amount": [1.5, None, 3.25],
        }
    )
    cache.set_arrow("frame", df)
    back = cache.get_polars("frame")
    assert isinstance(back, pl.DataFrame)
    assert back.equals(df)
    # A Polars frame reads as a pyarrow table too, and the other way round.
    assert cache.get_arrow("frame").to_pydict() == df.to_dict(as_series=False)
    cache.set_arrow("table", _table(10))
    assert cache.get_polars("table").height == 10


def test_a_source_failing_part_way_stores_nothing_and_keeps_the_old_value(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    old = _table(5)
    cache.set_arrow("k", old)

    def failing():
        yield _table(10).to_batches()[0]
        raise RuntimeError("the extract broke")

    reader = pa.RecordBatchReader.from_batches(old.schema, failing())
    with pytest.raises(StreamError, match="the extract broke"):
        cache.set_arrow("k", reader)
    assert cache.get_arrow("k").equals(old)
    # A batch of another schema than the reader's is refused the same way.
    other = pa.table({"x": [1]}).to_batches()[0]
    with pytest.raises(CacheError, match="does not match its schema"):
        cache.set_arrow("k", pa.RecordBatchReader.from_batches(old.schema, iter([other])))
    assert cache.get_arrow("k").equals(old)


def test_what_is_not_arrow_data_is_refused_clearly(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("plain", b"not arrow")
    with pytest.raises(CacheError, match="plain"):
        cache.get_arrow("plain")
    with pytest.raises(TypeError, match="set_arrow takes Arrow data.*got list"):
        cache.set_arrow("k", [1, 2, 3])
    # An Arrow entry read with get() is its IPC file's bytes.
    cache.set_arrow("t", _table(3))
    raw = cache.get("t")
    assert isinstance(raw, bytes)
    assert pa.ipc.open_file(raw).read_all().equals(_table(3))


def test_awaitable_arrow_calls_run_concurrently_on_one_loop(tmp_path):
    async def main():
        cache = AsyncLocalDiskCache(str(tmp_path))
        tables = [_table(300, seed=i * 1000) for i in range(6)]
        # Six writers and six readers of one key and of their own keys at
        # once: each read is one whole version.
        await asyncio.gather(
            *(cache.set_arrow(f"t{i}", t) for i, t in enumerate(tables)),
            *(cache.set_arrow("shared", t) for t in tables),
        )
        got = await asyncio.gather(*(cache.get_arrow(f"t{i}") for i in range(6)))
        assert all(g.equals(t) for g, t in zip(got, tables))
        shared = await cache.get_arrow("shared")
        assert any(shared.equals(t) for t in tables)
        frame = await cache.get_polars("t0")
        assert frame.height == 300
        batches = await cache.get_arrow_batches("t1")
        rows = [b async for b in batches]
        assert pa.Table.from_batches(rows).equals(tables[1])
        assert await cache.get_arrow("missing") is None
        assert await cache.get_arrow_batches("missing") is None

    asyncio.run(main())


def test_a_damaged_entry_is_the_caches_error_naming_the_key(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    t = pa.table({"x": pa.array(range(1 << 19), pa.int64())})  # 4 MiB, 4 checked blocks
    cache.set_arrow("orders", t, compression="none")
    digest = hashlib.sha256(b"orders").hexdigest()
    path = tmp_path / "etl-cache-v1" / "entries" / digest[:2] / digest
    raw = bytearray(path.read_bytes())
    raw[3 << 20] ^= 0x40  # inside the fourth block, far from the schema
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptEntryError, match="orders"):
        cache.get_arrow("orders")
    assert cache.get_arrow("orders") is None  # removed


def test_an_arrow_entry_is_an_ipc_file_the_command_line_and_pyarrow_open(tmp_path):
    root = str(tmp_path / "shared")
    cache = LocalDiskCache(root)
    t = _table(2000)
    cache.set_arrow("orders", t)
    out = tmp_path / "orders.arrow"
    _run("--cache", root, "get", "orders", "-o", str(out))
    assert pa.ipc.open_file(str(out)).read_all().equals(t)
    assert pl.read_ipc(str(out)).height == 2000


def test_concurrent_writers_and_readers_on_one_handle_and_two(tmp_path):
    root = str(tmp_path)
    handles = [LocalDiskCache(root), LocalDiskCache(root)]
    versions = [_table(400, seed=v * 1000) for v in range(4)]
    errors: list[BaseException] = []
    seen: list[int] = []

    def writer(v: int) -> None:
        try:
            for _ in range(5):
                handles[v % 2].set_arrow("shared", versions[v])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def reader(h: int) -> None:
        try:
            for _ in range(10):
                got = handles[h].get_arrow("shared")
                if got is None:
                    continue
                # Always one whole version, never rows of two.
                first = got.column("id")[0].as_py()
                v = first // 1000
                assert got.equals(versions[v])
                seen.append(v)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(4)]
    threads += [threading.Thread(target=reader, args=(h % 2,)) for h in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = handles[1].get_arrow("shared")
    assert any(final.equals(v) for v in versions)


_BOUNDED = """
import resource, sys
import pyarrow as pa
import pyarrow.compute as pc
from etl_cache import LocalDiskCache

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

cache = LocalDiskCache(sys.argv[1])
schema = pa.schema([("x", pa.int64())])
column = pa.array(range(1 << 20), pa.int64())  # 8 MiB
base = peak_mib()

def batches():
    # A new 8 MiB batch each time, freed once written: a write that held
    # the batches would grow with their number.
    for i in range(int(sys.argv[2])):
        yield pa.record_batch([pc.add(column, i)], schema=schema)

cache.set_arrow("big", pa.RecordBatchReader.from_batches(schema, batches()), compression="none")
after_write = peak_mib()
rows = 0
for b in cache.get_arrow_batches("big"):
    rows += b.num_rows
print(rows, base, after_write, peak_mib())
"""


def _peaks(tmp_path, batches: int) -> tuple[int, int]:
    """Peak RSS growth (MiB) of a process that writes `batches` batches of
    8 MiB with set_arrow, then reads them back with get_arrow_batches: over
    what it held before the write, after the write and after the read."""
    out = subprocess.run(
        [sys.executable, "-c", _BOUNDED, str(tmp_path / str(batches)), str(batches)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    rows, base, after_write, after_read = (int(x) for x in out)
    assert rows == batches << 20
    return after_write - base, after_read - base


def test_a_table_larger_than_the_memory_it_may_take_streams_in_and_out(tmp_path):
    # 192 MiB and 576 MiB of batches: the peak grows by far less than the
    # data, and not with it (the allocator keeps some slack per thread).
    small = _peaks(tmp_path, 24)
    large = _peaks(tmp_path, 72)
    for grew in (*small, *large):
        assert grew < 160, (small, large)
    assert large[0] < small[0] + 64 and large[1] < small[1] + 64, (small, large)
