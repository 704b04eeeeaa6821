"""The one way a generated module is made or found: a cache key of everything that shapes its text, then
`cache.load_or_generate`.

Every generated module — a loss's kernels (symsm/runtime/compiled.py), the fitting kernels
(symsm/runtime/accumulate.py), the CUDA quadratic form (symsm/runtime/device.py), the moments kernel
(symsm/runtime/moments.py) — goes through `load_module`, which adds the symsm version and the digest of the
generator's sources to the caller's key parts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from .._version import __version__
from ..core import cache
from ..core.templates import package_digest

__all__ = ["GENERATOR_PACKAGES", "LoadedModule", "generator_digest", "load_module", "module_key"]

# Every package whose code or templates shape a generated module (symbolic derivation, kernel IR, backends):
# a change to any file in them gives new cache keys.
GENERATOR_PACKAGES = ("symsm.derive", "symsm.ir", "symsm.backends")


def generator_digest() -> str:
    """sha256 of the sources and code templates of GENERATOR_PACKAGES (computed once per process)."""
    return package_digest(GENERATOR_PACKAGES)


class LoadedModule(NamedTuple):
    """A generated module as the cache gave it: the imported module, its file, its verified text and its key."""

    module: ModuleType
    path: Path
    source: str
    key: str


def module_key(kind: str, **parts: Any) -> str:
    """The cache key of a generated module of `kind` ("loss", "fit", "hessian", ...): `parts` (everything
    the caller's generator reads: model, backend, dtype, objective, ...) plus the symsm version and the
    digest of the generator's sources."""
    reserved = {"kind", "version", "generator"} & parts.keys()
    if reserved:
        raise ValueError(f"key parts {sorted(reserved)} are added by module_key, not given")
    return cache.cache_key(kind=kind, **parts, version=__version__, generator=generator_digest())


def load_module(kind: str, generate: Callable[[str], str], **parts: Any) -> LoadedModule:
    """The generated module of `kind` for the key parts `parts` (see `module_key`): imported from the cache
    if a verified file is there, else `generate(key)` writes its text (the key goes into its header)."""
    key = module_key(kind, **parts)
    module, path, source = cache.load_or_generate(key, lambda: generate(key))
    return LoadedModule(module, path, source, key)
