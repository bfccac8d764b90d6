"""``from etl_cache.s3_cache import S3Cache``, as etl-pycache spells it."""

from etl_cache._native import S3Cache

__all__ = ["S3Cache"]
