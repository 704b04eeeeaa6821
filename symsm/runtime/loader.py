"""The one way a generated module is made or found: a cache key of everything that shapes its text, then
`cache.load_or_generate`."""

from __future__ import annotations

from ..core.templates import package_digest

__all__ = ["GENERATOR_PACKAGES", "generator_digest"]

# Every package whose code or templates shape a generated module (symbolic derivation, kernel IR, backends):
# a change to any file in them gives new cache keys.
GENERATOR_PACKAGES = ("symsm.derive", "symsm.ir", "symsm.backends")


def generator_digest() -> str:
    """sha256 of the sources and code templates of GENERATOR_PACKAGES (computed once per process)."""
    return package_digest(GENERATOR_PACKAGES)
