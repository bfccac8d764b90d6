"""dict and list payloads come back as json.dumps wrote them: key order,
integers of any size, float digits, nested containers, non-ASCII text; on
disk, on S3, through the asyncio classes, and shared with the Rust side."""

from __future__ import annotations

import asyncio
import json
import math
import os

import pytest

import etl_cache
from etl_cache import LocalDiskCache, S3Cache

from test_engine import _run

DOCS = {
    "order": {"b": 1, "a": 2, "c": {"z": 0, "y": [3, 2, 1]}},
    "big-ints": [2**70, -(2**80), 2**64, -(2**63) - 1, 10**30],
    "floats": [0.1, 1e300, -2.5e-310, 1.7976931348623157e308, 0.30000000000000004],
    "nested": {"rows": [{"id": 1, "tags": ["x", {"deep": [[[]]]}]}], "none": None, "ok": True},
    "unicode": {"clé": "päyload ✓ 日本語", "emoji": ["🚀", "\u2028"]},
    "empty-dict": {},
    "empty-list": [],
}


def _same(got, want) -> None:
    """Equal, with the same key order at every level and the same types
    (an int stays an int, 2**70 is not 1.1805916207174113e21)."""
    assert json.dumps(got) == json.dumps(want)
    assert got == want
    assert type(got) is type(want)


@pytest.mark.parametrize("compression", [None, "zstd", "gzip"])
@pytest.mark.parametrize("name", list(DOCS))
def test_disk_json_comes_back_as_written(tmp_path, name, compression):
    cache = LocalDiskCache(str(tmp_path))
    cache.set(name, DOCS[name], compression=compression)
    _same(cache.get(name), DOCS[name])


def test_key_order_is_kept_at_every_level(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("k", {"b": 1, "a": 2})
    assert list(cache.get("k")) == ["b", "a"]
    cache.set("k", [{"z": 1, "m": 2, "a": 3}])
    assert list(cache.get("k")[0]) == ["z", "m", "a"]


def test_json_is_stored_as_json_dumps_text(tmp_path):
    """The stream of a JSON entry is the text json.dumps made, byte for byte."""
    cache = LocalDiskCache(str(tmp_path))
    doc = DOCS["unicode"] | {"n": 2**70, "f": 0.1}
    cache.set("k", doc, compress=True)
    text = b"".join(cache.get_stream("k"))
    assert text == json.dumps(doc, ensure_ascii=False, allow_nan=False).encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(tmp_path, bad):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("k", {"before": 1})
    with pytest.raises(ValueError, match="JSON compliant"):
        cache.set("k", {"x": [1, bad]})
    _same(cache.get("k"), {"before": 1})


def test_unserializable_payloads_are_refused_and_store_nothing(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    with pytest.raises(TypeError):
        cache.set("k", {"x": object()})
    # Integers no JSON reader here takes (beyond a double's range): refused,
    # with the key named, rather than stored unreadable.
    with pytest.raises(ValueError, match='"k"'):
        cache.set("k", [10**400])
    assert cache.get("k") is None


def test_async_json_comes_back_as_written(tmp_path):
    async def main():
        cache = etl_cache.AsyncLocalDiskCache(str(tmp_path))
        for name, doc in DOCS.items():
            await cache.set(name, doc, compression="zstd")
        for name, doc in DOCS.items():
            _same(await cache.get(name), doc)

    asyncio.run(main())


def test_s3_json_comes_back_as_written(s3_client, bucket):
    cache = S3Cache(bucket, client=s3_client, prefix="json")
    for name, doc in DOCS.items():
        cache.set(name, doc, compress=name == "order")
    for name, doc in DOCS.items():
        _same(cache.get(name), doc)

    async def main():
        acache = etl_cache.AsyncS3Cache(bucket, client=s3_client, prefix="json-async")
        for name, doc in DOCS.items():
            await acache.set(name, doc)
        for name, doc in DOCS.items():
            _same(await acache.get(name), doc)
        # And the synchronous class reads what the async one wrote.
        for name, doc in DOCS.items():
            _same(S3Cache(bucket, client=s3_client, prefix="json-async").get(name), doc)

    asyncio.run(main())


def _kinds(root: str, env: dict | None = None) -> dict[str, str]:
    listed = json.loads(_run("--cache", root, "ls", "--json", env=env))
    rows = listed["entries"] if isinstance(listed, dict) else listed
    return {row["key"]: row["kind"] for row in rows}


def test_disk_json_is_shared_with_rust_both_ways(tmp_path):
    root = str(tmp_path / "shared")
    cache = LocalDiskCache(root)
    doc = {"b": 1, "a": [2**70, 0.1, "é"]}
    cache.set("from_python", doc, compress=True)
    # The Rust side sees a JSON entry holding json.dumps' text.
    assert _kinds(root)["from_python"] == "json"
    out = _run("--cache", root, "get", "from_python")
    assert out == json.dumps(doc, ensure_ascii=False).encode()
    # A JSON entry written by Rust (serde's text) reads as a dict.
    _run("--cache", root, "set", "from_rust", "--json", stdin=b'{"z": [1, 2.5], "a": null}')
    assert _kinds(root)["from_rust"] == "json"
    assert cache.get("from_rust") == {"z": [1, 2.5], "a": None}


def test_s3_json_is_shared_with_rust_both_ways(moto_env, s3_client, bucket):
    env = moto_env
    url = f"s3://{bucket}/shared-json"
    cache = S3Cache(bucket, client=s3_client, prefix="shared-json")
    doc = [{"b": 2**70, "a": -(2**80)}, 1e300]
    cache.set("from_python", doc)
    assert _kinds(url, env)["from_python"] == "json"
    assert _run("--cache", url, "get", "from_python", env=env) == json.dumps(doc).encode()
    _run("--cache", url, "set", "from_rust", "--json", env=env, stdin=b'[{"k": "v"}]')
    assert cache.get("from_rust") == [{"k": "v"}]
