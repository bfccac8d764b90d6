"""``from etl_cache.interfaces import BaseCache``, as etl-pycache spells it."""

from etl_cache._native import BaseCache

__all__ = ["BaseCache"]
