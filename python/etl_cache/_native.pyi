# Types of the compiled engine module, for type checkers and editors.
# tests/test_stubs.py keeps this file and the module in step.

import os
from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from etl_cache.interfaces import BaseCache as _Contract

if TYPE_CHECKING:
    import polars
    import pyarrow

__version__: str

_Payload = str | bytes | bytearray | memoryview | dict[str, Any] | list[Any]

class CacheError(Exception): ...
class InvalidKeyError(CacheError): ...
class CorruptEntryError(CacheError): ...
class LockTimeoutError(CacheError): ...
class TooLargeError(CacheError): ...
class StreamError(CacheError): ...
class OpenError(CacheError): ...
class BackendError(CacheError): ...

class ChunkIterator:
    def __iter__(self) -> ChunkIterator: ...
    def __next__(self) -> bytes: ...
    def read(self, size: int = -1) -> bytes: ...
    def close(self) -> None: ...
    def __enter__(self) -> ChunkIterator: ...
    def __exit__(
        self,
        _ty: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None: ...

# The engine's caches keep the seed's contract (registered with it at
# import time); stated here so that type checkers know it too.
class BaseCache(_Contract):
    def set(
        self,
        key: str,
        payload: _Payload | Iterator[bytes],
        ttl_seconds: float | None = None,
        compress: object = False,
        compression: str | None = None,
    ) -> None: ...
    def get(self, key: str) -> str | bytes | dict[str, Any] | list[Any] | None: ...
    def get_stream(self, key: str, chunk_size: int = 65536) -> ChunkIterator | None: ...
    def delete(self, key: str) -> bool: ...
    def purge_expired(self) -> int: ...
    def clear(self) -> int: ...
    def __contains__(self, key: str) -> bool: ...
    def aset(
        self,
        key: str,
        payload: _Payload,
        ttl_seconds: float | None = None,
        compress: object = False,
        compression: str | None = None,
    ) -> Awaitable[None]: ...
    def aget(self, key: str) -> Awaitable[str | bytes | dict[str, Any] | list[Any] | None]: ...
    def adelete(self, key: str) -> Awaitable[bool]: ...
    def set_arrow(
        self,
        key: str,
        data: Any,
        ttl_seconds: float | None = None,
        compression: str = "zstd",
    ) -> None: ...
    def get_arrow(self, key: str) -> pyarrow.Table | None: ...
    def get_arrow_batches(self, key: str) -> pyarrow.RecordBatchReader | None: ...
    def get_polars(self, key: str) -> polars.DataFrame | None: ...

class LocalDiskCache(BaseCache):
    def __new__(
        cls,
        cache_dir: str | os.PathLike[str] | None = ".cache",
        max_entries: int | None = None,
        *,
        max_bytes: int | None = None,
        lock_timeout: float | None = None,
        compression: str | None = None,
        durable: bool = False,
    ) -> LocalDiskCache: ...
    def get_local_cache_name(self) -> str: ...

class S3Cache(BaseCache):
    def __new__(
        cls,
        bucket_name: str,
        client: Any = None,
        *,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        compression: str | None = None,
        lock_timeout: float | None = None,
        options: dict[str, object] | None = None,
    ) -> S3Cache: ...

def open(
    url: str,
    options: dict[str, object] | None = None,
    *,
    compression: str | None = None,
) -> BaseCache: ...
