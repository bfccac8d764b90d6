"""``from etl_cache.interfaces import BaseCache``, as etl-pycache spells it.

``BaseCache`` is the contract every cache keeps: ``set``, ``get``,
``get_stream`` and ``delete``. It is an abstract base class, as in
etl-pycache, so a pipeline's own cache written in Python subclasses it as
before; the engine's caches (``LocalDiskCache``, ``S3Cache`` and what
``etl_cache.open`` returns) are registered with it, so ``isinstance`` and
``issubclass`` checks against it hold for them too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from etl_cache import _native

#: What ``set`` takes and ``get`` returns.
PayloadType = str | bytes | dict | list | Iterator[bytes]


class BaseCache(ABC):
    """The methods every cache offers."""

    @abstractmethod
    def set(
        self,
        key: str,
        payload: PayloadType,
        ttl_seconds: float | None = None,
        compress: bool = False,
    ) -> None:
        """Stores ``payload`` under ``key``, replacing what was there."""

    @abstractmethod
    def get(self, key: str) -> PayloadType | None:
        """The value under ``key`` as the type it was set with, or ``None``."""

    @abstractmethod
    def get_stream(self, key: str, chunk_size: int = 65536) -> Iterator[bytes] | None:
        """The value's bytes in chunks, or ``None`` when it is missing."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes ``key``; a missing key is not an error."""


# The engine's base class (and so every engine cache) counts as a BaseCache.
BaseCache.register(_native.BaseCache)

__all__ = ["BaseCache", "PayloadType"]
