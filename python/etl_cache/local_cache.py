"""``from etl_cache.local_cache import LocalDiskCache``, as etl-pycache spells it."""

from etl_cache._native import LocalDiskCache

__all__ = ["LocalDiskCache"]
