"""Fixtures: the two implementations under test, and a local S3 server.

Every scenario of the seed's README runs against this package and against
the original etl-pycache (when it is installed), so the suite shows where the
two agree and where this package differs on purpose.

The S3 server is moto's (``moto_server``, PyPI ``moto[server]``), found as the
Rust tests find it: ``ETL_CACHE_MOTO_SERVER``, then
``$ETL_CACHE_TEST_SERVERS_DIR/venv/bin/moto_server`` (default directory
``~/.cache/etl-cache-test-servers``), then ``PATH``. It listens on a free port
of 127.0.0.1 and stops with the session. Under ``CI`` a missing server or a
missing etl-pycache fails the run instead of skipping.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

import etl_cache

IN_CI = bool(os.environ.get("CI"))


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing; CI must run these tests", pytrace=False)
    pytest.skip(f"{what} is missing")


@dataclass
class Impl:
    """One implementation of the seed's API."""

    name: str
    local: Callable[..., Any]
    s3: Callable[..., Any]

    @property
    def ours(self) -> bool:
        return self.name == "etl_cache"


def _ours() -> Impl:
    return Impl("etl_cache", etl_cache.LocalDiskCache, etl_cache.S3Cache)


def _seed() -> Impl:
    try:
        from etl_pycache.local_cache import LocalDiskCache
        from etl_pycache.s3_cache import S3Cache
    except ImportError:
        _missing("etl-pycache (pip install 'etl-pycache[s3]')")
    return Impl("etl_pycache", LocalDiskCache, S3Cache)


@pytest.fixture(params=["etl_cache", "etl_pycache"])
def impl(request) -> Impl:
    """Each implementation in turn."""
    return _ours() if request.param == "etl_cache" else _seed()


def _moto_program() -> str | None:
    if p := os.environ.get("ETL_CACHE_MOTO_SERVER"):
        return p if os.path.isfile(p) else None
    base = Path(
        os.environ.get("ETL_CACHE_TEST_SERVERS_DIR")
        or Path.home() / ".cache/etl-cache-test-servers"
    )
    p = base / "venv/bin/moto_server"
    if p.is_file():
        return str(p)
    return shutil.which("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """The endpoint of a moto S3 server started for this session."""
    program = _moto_program()
    if program is None:
        _missing("moto_server (PyPI moto[server]; run scripts/install-test-servers.sh)")
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    for _attempt in range(3):
        port = _free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [program, "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)  # polling for the server to listen, not ordering a race
        if proc.poll() is None:
            try:
                yield endpoint
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            return
    pytest.fail(f"moto did not start; its log:\n{log_path.read_text()}")


_bucket_ids = itertools.count()


@pytest.fixture
def s3_client(moto_endpoint):
    """A boto3 client on the moto server, as the seed's users inject one."""
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh bucket on the moto server."""
    name = f"etl-test-{os.getpid()}-{next(_bucket_ids)}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def moto_env(moto_endpoint) -> dict:
    """The environment under which the `etl-cache` command line reaches the
    moto server (what object_store reads for S3)."""
    return dict(
        os.environ,
        AWS_ENDPOINT=moto_endpoint,
        AWS_ALLOW_HTTP="true",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )


def read_all(stream) -> bytes:
    """The bytes of a get_stream result: an iterator of chunks, or (the seed's
    S3Cache) a boto3 StreamingBody."""
    if hasattr(stream, "read"):
        return stream.read()
    return b"".join(stream)
