"""The scenarios of etl-pycache's README, run against both implementations.

Where the two differ on purpose, the test says so and asserts each side's
behaviour: this package keeps types, decompresses get_stream, and orders its
LRU by last read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import read_all


def disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def xml_payload(records: int = 20_000) -> str:
    rows = "".join(
        f'<row id="{i}"><account>ACC-{i % 977:04d}</account><amount>{i * 3 % 10007}.25</amount>'
        f"<currency>EUR</currency><status>posted</status></row>\n"
        for i in range(records)
    )
    return f"<dataset>\n{rows}</dataset>\n"


def test_xml_with_compress_is_smaller_on_disk_and_reads_back(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    xml = xml_payload()
    cache.set("massive_xml_payload", xml, compress=True)
    assert cache.get("massive_xml_payload") == xml
    # The README promises ~80% smaller on disk.
    assert disk_usage(tmp_path / "c") < len(xml) / 5


def test_core_interface_set_get_delete(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set(key="payload_123", payload="<xml>...</xml>")
    assert cache.get(key="payload_123") == "<xml>...</xml>"
    cache.delete(key="payload_123")
    assert cache.get(key="payload_123") is None


def test_a_miss_is_none_never_an_exception(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    assert cache.get("never_set") is None
    assert cache.get_stream("never_set") is None
    cache.delete("never_set")  # deleting a missing key is fine


@pytest.mark.parametrize(
    "payload",
    [
        {"records_processed": 1042, "status": "success"},
        [1, "two", 3.5, None, {"nested": [True, False]}],
        "<xml>...</xml>",
        "päyload ✓ with unicode",
        b"\x89PNG\r\n\x1a\n\x00\xff binary",
    ],
    ids=["dict", "list", "str", "unicode-str", "binary-bytes"],
)
@pytest.mark.parametrize("compress", [False, True])
def test_polymorphic_payloads_round_trip(impl, tmp_path, payload, compress):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("job_123_stats", payload, compress=compress)
    result = cache.get("job_123_stats")
    assert result == payload
    assert type(result) is type(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "success", "records_processed": 1042, "errors": []},
        [{"z": 2**70, "a": -(2**80)}, 0.1, 1e300, {}],
    ],
    ids=["key-order", "big-ints-and-floats"],
)
def test_json_keeps_key_order_and_numbers(impl, tmp_path, payload):
    """Both keep what json.dumps wrote: insertion order, exact integers."""
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("job_123_stats", payload)
    result = cache.get("job_123_stats")
    assert json.dumps(result) == json.dumps(payload)
    assert result == payload


@pytest.mark.parametrize(
    "payload, seed_returns",
    [
        (b"plain ascii bytes", "plain ascii bytes"),
        ('{"looks": "like json"}', {"looks": "like json"}),
        ("[1, 2, 3]", [1, 2, 3]),
        (b'{"a": 1}', {"a": 1}),
    ],
    ids=["utf8-bytes", "json-looking-str", "list-looking-str", "json-looking-bytes"],
)
def test_types_are_kept_where_the_seed_guesses(impl, tmp_path, payload, seed_returns):
    """Differs on purpose: the seed guesses the type from the content."""
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("k", payload)
    got = cache.get("k")
    if impl.ours:
        assert got == payload and type(got) is type(payload)
    else:
        assert got == seed_returns


def test_capacity_ceiling_of_1000_entries(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "safe_cache"), max_entries=1000)
    for i in range(1000):
        cache.set(f"run_{i:04d}", f"payload {i}")
    cache.set("new_financial_run", "massive_payload")
    present = [i for i in range(1000) if cache.get(f"run_{i:04d}") is not None]
    assert len(present) == 999  # the 1001st set evicted exactly one entry
    assert 0 not in present  # the oldest one
    assert cache.get("new_financial_run") == "massive_payload"


def test_lru_order_is_by_last_read(impl, tmp_path):
    """Differs on purpose: reading an entry keeps it; the seed evicts by write time."""
    cache = impl.local(cache_dir=str(tmp_path / "c"), max_entries=3)
    for k in ("a", "b", "c"):
        cache.set(k, k)
        time.sleep(0.01)  # distinct mtimes for the seed, whose order is by write time
    assert cache.get("a") == "a"  # a is now the most recently read
    cache.set("d", "d")
    if impl.ours:
        assert cache.get("a") == "a"
        assert cache.get("b") is None
    else:
        assert cache.get("a") is None
        assert cache.get("b") == "b"
    assert cache.get("d") == "d"


def _generator(parts: int, size: int):
    for i in range(parts):
        yield bytes([i % 251]) * size


def test_stream_from_a_generator(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("downloaded_dataset", _generator(40, 65536))
    expected = b"".join(_generator(40, 65536))
    chunks = list(cache.get_stream("downloaded_dataset", chunk_size=65536))
    assert b"".join(chunks) == expected
    assert max(len(c) for c in chunks) <= 65536


def test_stream_a_local_file_in_chunks(impl, tmp_path):
    source = tmp_path / "massive_local_file.csv"
    with open(source, "w") as f:
        for i in range(50_000):
            f.write(f"{i},account-{i % 97},{i * 7 % 1000}.50\n")

    def read_in_chunks(file_path: str, chunk_size: int = 65536):
        with open(file_path, "rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("local_backup", read_in_chunks(str(source)))
    assert read_all(cache.get_stream("local_backup", chunk_size=10_000)) == source.read_bytes()


def test_get_stream_of_a_compressed_entry(impl, tmp_path):
    """Differs on purpose: the seed streams the gzip bytes as stored."""
    import gzip

    cache = impl.local(cache_dir=str(tmp_path / "c"))
    xml = xml_payload(2000)
    cache.set("financial_run_001", xml, compress=True)
    streamed = read_all(cache.get_stream("financial_run_001"))
    if impl.ours:
        assert streamed == xml.encode()
    else:
        assert gzip.decompress(streamed) == xml.encode()


def test_ttl_expiry(impl, tmp_path):
    cache = impl.local(cache_dir=str(tmp_path / "c"))
    cache.set("daily_report", {"status": "success"}, ttl_seconds=3600)
    assert cache.get("daily_report") == {"status": "success"}
    cache.set("short_lived", {"status": "success"}, ttl_seconds=1)
    assert cache.get("short_lived") == {"status": "success"}
    time.sleep(1.1)  # TTLs are whole seconds in the seed: let one pass
    assert cache.get("short_lived") is None
    assert cache.get_stream("short_lived") is None
    assert cache.get("daily_report") == {"status": "success"}


def test_cheat_sheet_ttl_and_compression(impl, tmp_path):
    local_cache = impl.local(cache_dir=str(tmp_path / "my_etl_cache"))
    payload = "<dataset>" + "x" * 100_000 + "</dataset>"
    local_cache.set("financial_run_001", payload, ttl_seconds=3600, compress=True)
    assert local_cache.get("financial_run_001") == payload


# --- S3 ---------------------------------------------------------------------


def test_s3_folder_key_generator_and_ttl(impl, s3_client, bucket):
    cache = impl.s3(bucket_name=bucket, client=s3_client)
    data = b"".join(_generator(100, 100_000))  # 10 MB, several multipart parts
    cache.set("my_folder/financial_data", _generator(100, 100_000), ttl_seconds=3600)
    stream = cache.get_stream("my_folder/financial_data")
    assert read_all(stream) == data


def test_s3_payloads_compress_and_ttl(impl, s3_client, bucket):
    cache = impl.s3(bucket_name=bucket, client=s3_client)
    xml = xml_payload(2000)
    cache.set("deve/financial_run_001", xml, ttl_seconds=3600, compress=True)
    assert cache.get("deve/financial_run_001") == xml
    cache.set("stats", {"records_processed": 1042})
    assert cache.get("stats") == {"records_processed": 1042}
    cache.set("blob", b"\xff\x00\xfe")
    assert cache.get("blob") == b"\xff\x00\xfe"
    cache.set("soon_gone", "x", ttl_seconds=1)
    assert cache.get("soon_gone") == "x"
    time.sleep(1.1)  # TTLs are whole seconds in the seed: let one pass
    assert cache.get("soon_gone") is None
    cache.delete("stats")
    assert cache.get("stats") is None
    assert cache.get("never_set") is None


def test_s3_utf8_bytes_keep_their_type(impl, s3_client, bucket):
    """Differs on purpose, as on disk."""
    cache = impl.s3(bucket_name=bucket, client=s3_client)
    cache.set("k", b"plain text bytes")
    got = cache.get("k")
    assert got == (b"plain text bytes" if impl.ours else "plain text bytes")


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    # A cache opened with the default cache_dir lands in the test's directory.
    monkeypatch.chdir(tmp_path)
    yield
    assert os.getcwd() == str(tmp_path)
