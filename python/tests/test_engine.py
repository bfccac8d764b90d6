"""What this package adds to the seed's API: typed errors, zstd, streams that
fail cleanly, thread safety, the boto3 client, and caches shared with Rust."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import etl_cache
from etl_cache import LocalDiskCache, S3Cache


def test_import_paths_match_the_seed():
    from etl_cache.interfaces import BaseCache
    from etl_cache.local_cache import LocalDiskCache as L
    from etl_cache.s3_cache import S3Cache as S

    assert L is LocalDiskCache and S is S3Cache
    assert issubclass(L, BaseCache) and issubclass(S, BaseCache)


def test_base_cache_is_the_seeds_abstract_contract(tmp_path):
    from etl_cache.interface import BaseCache as Spelled
    from etl_cache.interfaces import BaseCache, PayloadType

    assert Spelled is BaseCache and etl_cache.BaseCache is BaseCache
    assert isinstance(LocalDiskCache(str(tmp_path)), BaseCache)
    assert PayloadType is etl_cache.PayloadType

    # A pipeline's own cache, written in Python, subclasses it as before.
    class DictCache(BaseCache):
        def __init__(self):
            self.d = {}

        def set(self, key, payload, ttl_seconds=None, compress=False):
            self.d[key] = payload

        def get(self, key):
            return self.d.get(key)

        def get_stream(self, key, chunk_size=65536):
            v = self.d.get(key)
            return None if v is None else iter([v])

        def delete(self, key):
            self.d.pop(key, None)

    c = DictCache()
    c.set("k", {"a": 1})
    assert c.get("k") == {"a": 1} and isinstance(c, BaseCache)

    class Incomplete(BaseCache):
        def get(self, key):
            return None

    with pytest.raises(TypeError):
        Incomplete()


def test_get_local_cache_name_is_the_directory_given(tmp_path, monkeypatch):
    assert LocalDiskCache(str(tmp_path)).get_local_cache_name() == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert LocalDiskCache().get_local_cache_name() == ".cache"


def test_default_cache_dir_is_dot_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = LocalDiskCache()
    cache.set("k", "v")
    assert (tmp_path / ".cache").is_dir()
    assert LocalDiskCache(".cache").get("k") == "v"


def test_errors_are_cache_errors_that_name_the_key(tmp_path):
    cache = LocalDiskCache(str(tmp_path), max_bytes=1000)
    with pytest.raises(etl_cache.InvalidKeyError, match="must not be empty"):
        cache.set("", "x")
    with pytest.raises(etl_cache.TooLargeError, match="big_one"):
        cache.set("big_one", os.urandom(5000))
    assert issubclass(etl_cache.TooLargeError, etl_cache.CacheError)
    with pytest.raises(TypeError, match="unsupported payload type int"):
        cache.set("k", 42)
    with pytest.raises(ValueError, match="ttl_seconds"):
        cache.set("k", "v", ttl_seconds=-1)
    with pytest.raises(ValueError, match="unknown compression"):
        cache.set("k", "v", compression="lz4")


def test_a_corrupt_entry_raises_and_is_removed(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("ledger", "x" * 10_000)
    [entry] = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 5000]
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.raises(etl_cache.CorruptEntryError, match="ledger"):
        cache.get("ledger")
    assert cache.get("ledger") is None


def test_zstd_compression_streams_and_values(tmp_path):
    cache = LocalDiskCache(str(tmp_path), compression="zstd")
    text = "<row>same row again</row>\n" * 50_000
    cache.set("z", text, compress=True)  # compress=True uses the cache's codec
    assert cache.get("z") == text
    cache.set("zs", iter([text.encode()] * 4), compression="zstd:9")
    assert b"".join(cache.get_stream("zs")) == text.encode() * 4
    stored = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert stored < len(text) / 20


def test_compress_takes_any_truthy_value_as_the_seed_does(tmp_path):
    text = "<row>same row again</row>\n" * 20_000

    def stored(flag) -> int:
        root = tmp_path / f"c-{flag!r}"
        cache = LocalDiskCache(str(root))
        cache.set("k", text, compress=flag)
        assert cache.get("k") == text
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    plain = stored(False)
    assert plain > len(text)
    for truthy in (True, 1, "yes"):
        assert stored(truthy) < plain / 20, truthy
    for falsy in (0, None, ""):
        assert stored(falsy) >= len(text), falsy


def test_a_failing_iterator_keeps_the_previous_value(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("k", b"previous")

    def broken():
        yield b"partial " * 1000
        raise ConnectionError("API connection reset")

    with pytest.raises(ConnectionError, match="reset"):
        cache.set("k", broken())
    assert cache.get("k") == b"previous"
    with pytest.raises(TypeError, match='"k" yielded str'):
        cache.set("k", iter([b"ok", "not bytes"]))
    assert cache.get("k") == b"previous"


def test_stream_chunks_may_be_bytearray_or_memoryview(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("k", iter([bytearray(b"ab"), memoryview(b"cd"), b"ef"]))
    assert cache.get("k") == b"abcdef"


def test_get_stream_can_be_closed_early(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("k", b"x" * 1_000_000)
    with cache.get_stream("k", chunk_size=1000) as chunks:
        assert next(chunks) == b"x" * 1000
    assert list(chunks) == []
    cache.delete("k")


def test_threads_share_one_cache(tmp_path):
    cache = LocalDiskCache(str(tmp_path), max_entries=50)

    def work(t: int) -> None:
        for i in range(200):
            key = f"k{(t * 7 + i) % 60}"
            cache.set(key, {"t": t, "i": i, "key": key})
            got = cache.get(key)
            # another thread may have replaced or evicted it, never mangled it
            assert got is None or got["key"] == key

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    present = sum(cache.get(f"k{i}") is not None for i in range(60))
    assert present <= 50


def test_two_caches_over_one_directory(tmp_path):
    a = LocalDiskCache(str(tmp_path), max_entries=30)
    b = LocalDiskCache(str(tmp_path), max_entries=30)
    barrier = threading.Barrier(2)

    def writer(cache, tag: str) -> None:
        barrier.wait()
        for i in range(150):
            cache.set(f"{tag}{i % 40}", f"{tag}-{i}" * 100)
            got = cache.get(f"{tag}{i % 40}")
            assert got is None or got.startswith(f"{tag}-")

    threads = [threading.Thread(target=writer, args=(c, t)) for c, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [f"{t}{i}" for t in "ab" for i in range(40)]
    assert sum(a.get(k) is not None for k in keys) <= 30
    a.set("shared", [1, 2])
    assert b.get("shared") == [1, 2]


def test_boto3_client_without_credentials_is_a_clear_error():
    boto3 = pytest.importorskip("boto3")
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", config=Config(signature_version=UNSIGNED))
    with pytest.raises((ValueError, TypeError), match="credentials|aws_access_key_id"):
        S3Cache("bucket", client=client)
    with pytest.raises(TypeError, match="boto3 S3 client"):
        S3Cache("bucket", client=object())


_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """Empty AWS shared config and credentials files, and an environment
    that sets nothing else of AWS: what a profile gives is all there is."""
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    creds, config = tmp_path / "credentials", tmp_path / "config"
    creds.write_text("")
    config.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return creds, config


def test_s3_without_a_client_reads_the_aws_profile_as_boto3_does(
    aws_files, monkeypatch, moto_endpoint, s3_client, bucket
):
    creds, config = aws_files
    creds.write_text("[etl]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    config.write_text(f"[profile etl]\nregion = us-east-1\nendpoint_url = {moto_endpoint}\n")
    monkeypatch.setenv("AWS_PROFILE", "etl")
    cache = S3Cache(bucket, prefix="profiled")
    cache.set("run_1", {"rows": 3}, ttl_seconds=3600)
    assert cache.get("run_1") == {"rows": 3}
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith("profiled/") for k in keys)
    # The default profile when none is named.
    monkeypatch.delenv("AWS_PROFILE")
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    config.write_text(f"[default]\nregion = us-east-1\nendpoint_url = {moto_endpoint}\n")
    assert S3Cache(bucket, prefix="profiled").get("run_1") == {"rows": 3}


def test_an_aws_profile_that_cannot_be_followed_is_a_clear_error(aws_files, monkeypatch):
    creds, config = aws_files
    monkeypatch.setenv("AWS_PROFILE", "missing")
    with pytest.raises(ValueError, match="'missing'"):
        S3Cache("bucket")
    config.write_text("[profile assumed]\nrole_arn = arn:aws:iam::123:role/etl\nsource_profile = default\n")
    monkeypatch.setenv("AWS_PROFILE", "assumed")
    with pytest.raises(ValueError, match="role_arn.*boto3 client"):
        S3Cache("bucket")
    # Keys given: the profile's way to credentials is not needed.
    S3Cache(
        "bucket",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )


def test_keys_in_the_environment_win_over_the_profile(aws_files, monkeypatch):
    from etl_cache._aws_profile import settings

    creds, config = aws_files
    creds.write_text("[default]\naws_access_key_id = file\naws_secret_access_key = file\n")
    config.write_text("[default]\nregion = eu-west-1\n")
    assert settings() == {
        "aws_access_key_id": "file",
        "aws_secret_access_key": "file",
        "region_name": "eu-west-1",
    }
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env")
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    assert settings() == {}


def test_s3_with_explicit_endpoint_and_prefix(moto_endpoint, s3_client, bucket):
    cache = S3Cache(
        bucket,
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        prefix="team/etl",
    )
    cache.set("run_1", {"rows": 3})
    from_client = S3Cache(bucket, client=s3_client, prefix="team/etl")
    assert from_client.get("run_1") == {"rows": 3}
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith("team/etl/") for k in keys)
    url_cache = etl_cache.open(
        f"s3://{bucket}/team/etl",
        {
            "aws_endpoint": moto_endpoint,
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        },
    )
    assert url_cache.get("run_1") == {"rows": 3}


# --- shared with Rust (the etl-cache command line) -------------------------


def _cli() -> str:
    if p := os.environ.get("ETL_CACHE_CLI"):
        return p
    repo = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    for profile in ("release", "debug"):
        p = target / profile / "etl-cache"
        if p.is_file():
            return str(p)
    if p := shutil.which("etl-cache"):
        return p
    if os.environ.get("CI"):
        pytest.fail("the etl-cache command line is not built (cargo build --release)")
    pytest.skip("the etl-cache command line is not built")


def _run(*args: str, env: dict | None = None, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        [_cli(), "-q", *args], input=stdin, capture_output=True, check=True, env=env
    ).stdout


def test_disk_entries_written_by_rust_read_in_python_and_back(tmp_path):
    root = str(tmp_path / "shared")
    _run("--cache", root, "set", "from_rust.xml", "--compress", "zstd", stdin=b"<xml>rust</xml>")
    _run("--cache", root, "set", "stats", "--json", stdin=b'{"rows": 7}')
    cache = LocalDiskCache(root)
    assert cache.get("from_rust.xml") == b"<xml>rust</xml>"
    assert cache.get("stats") == {"rows": 7}
    cache.set("from_python", "päyload", compress=True)
    cache.set("streamed", iter([b"a" * 70_000, b"b" * 70_000]), compression="zstd")
    assert _run("--cache", root, "get", "from_python") == "päyload".encode()
    assert _run("--cache", root, "get", "streamed") == b"a" * 70_000 + b"b" * 70_000


def test_s3_entries_written_by_rust_read_in_python_and_back(moto_env, s3_client, bucket):
    env = moto_env
    url = f"s3://{bucket}/shared"
    _run("--cache", url, "set", "from_rust", "--text", env=env, stdin="hällo".encode())
    cache = S3Cache(bucket, client=s3_client, prefix="shared")
    assert cache.get("from_rust") == "hällo"
    cache.set("from_python", {"rows": [1, 2]}, compress=True)
    assert _run("--cache", url, "get", "from_python", env=env) == b'{"rows": [1, 2]}'


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_the_parents_cache(tmp_path):
    cache = LocalDiskCache(str(tmp_path))
    cache.set("before_fork", "parent")
    pid = os.fork()
    if pid == 0:  # the child: streams need the runtime's worker threads
        code = 1
        try:
            cache.set("from_child", iter([b"c" * 100_000] * 3))
            ok = cache.get("before_fork") == "parent"
            ok = ok and b"".join(cache.get_stream("from_child")) == b"c" * 300_000
            code = 0 if ok else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # a hung child must fail the test, not hang the suite
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert cache.get("from_child") == b"c" * 300_000


def test_get_stream_reads_like_a_file(tmp_path):
    """The seed's S3Cache returns boto3's StreamingBody: get_stream's result
    has read(size) too, mixing with iteration, b"" at the end."""
    cache = LocalDiskCache(cache_dir=str(tmp_path))
    data = bytes(range(256)) * 1000
    cache.set("f", data)
    stream = cache.get_stream("f", chunk_size=1000)
    assert stream.read(10) == data[:10]
    assert stream.read(2500) == data[10:2510]
    assert next(stream) == data[2510:3000]
    assert stream.read() == data[3000:]
    assert stream.read() == b""
    assert stream.read(5) == b""
    import io
    out = io.BytesIO()
    shutil.copyfileobj(cache.get_stream("f"), out)
    assert out.getvalue() == data
