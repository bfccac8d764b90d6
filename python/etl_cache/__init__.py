"""etl_cache: a persistent, disk-backed LRU cache for data pipelines.

The classes take etl-pycache's arguments; changing the import line moves a
pipeline onto this engine::

    from etl_cache import LocalDiskCache, S3Cache

Values come back as the type they went in, ``get_stream`` yields decompressed
bytes, and the LRU order is by last read (see the package README).
"""

from etl_cache._native import (
    BackendError,
    CacheError,
    ChunkIterator,
    CorruptEntryError,
    InvalidKeyError,
    LocalDiskCache,
    LockTimeoutError,
    OpenError,
    S3Cache,
    StreamError,
    TooLargeError,
    __version__,
    open,
)
from etl_cache.aio import AsyncCache, AsyncLocalDiskCache, AsyncS3Cache, aopen
from etl_cache.interfaces import BaseCache, PayloadType

# `open` and `aopen` stay out of `import *`: they would shadow the builtin.
__all__ = [
    "AsyncCache",
    "AsyncLocalDiskCache",
    "AsyncS3Cache",
    "BackendError",
    "BaseCache",
    "CacheError",
    "ChunkIterator",
    "CorruptEntryError",
    "InvalidKeyError",
    "LocalDiskCache",
    "LockTimeoutError",
    "OpenError",
    "PayloadType",
    "S3Cache",
    "StreamError",
    "TooLargeError",
    "__version__",
]
