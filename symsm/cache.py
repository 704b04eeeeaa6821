"""The kernel cache, public: ``symsm.cache.info()``, ``events()``, ``clear()``, ``cache_dir()`` (the
implementation is symsm.core.cache)."""

from .core.cache import CacheEvent, cache_dir, clear, default_location, events, info

__all__ = ["CacheEvent", "cache_dir", "clear", "default_location", "events", "info"]
