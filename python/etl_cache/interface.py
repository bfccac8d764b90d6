"""``from etl_cache.interface import BaseCache``: the spelling etl-pycache's
documentation uses (its package names the module ``interfaces``; both work)."""

from etl_cache.interfaces import BaseCache, PayloadType

__all__ = ["BaseCache", "PayloadType"]
