"""Content-addressed cache of generated kernel modules.

* The key is a sha256 of everything that determines the generated text: the canonical model, the
  backend, the dtype, the objective and its options, the symsm version and a digest of the templates and
  code generator (so a changed generator never serves stale code).
* Each file starts with a line recording the sha256 of the rest of its content; it is checked before
  every import, together with the key the file says it was generated for. A corrupt, truncated or
  foreign file is regenerated, never imported.
* Files are written to a temporary name in the same directory and renamed (atomic): concurrent
  processes compiling the same model leave one valid file.
* The directory is created with mode 0700; a directory owned by another user or writable by others is
  refused, since numba's own cache files live inside it and would be loaded from there. If the location
  cannot be written, a private temporary directory is used instead, with a warning.
* Modules are imported from their files with importlib, so numba's `cache=True` works and a second
  process neither regenerates the source nor recompiles the kernels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import CacheError

__all__ = ["CacheEvent", "cache_dir", "cache_key", "clear", "events", "info", "load_or_generate"]

HASH_PREFIX = "# symsm-content-sha256: "
ENV_VAR = "SYMSM_CACHE_DIR"


@dataclass(frozen=True)
class CacheEvent:
    """One thing the cache did in this process: "generated" (wrote a new file), "loaded" (imported an
    existing verified file), "memory" (reused a module already imported) or "rejected" (a bad file)."""

    kind: str
    key: str
    path: str
    seconds: float


_events: list[CacheEvent] = []
_modules: dict[str, ModuleType] = {}
_lock = threading.Lock()
_fallback_dir: Path | None = None


def events() -> list[CacheEvent]:
    """The cache's record of what it did in this process, oldest first."""
    return list(_events)


def cache_key(**parts: Any) -> str:
    """sha256 of the JSON of `parts` (sorted keys): the identity of one generated module."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_location() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "symsm"


def cache_dir() -> Path:
    """The cache directory, created 0700 and checked to be private; a private temporary one if unwritable."""
    global _fallback_dir
    path = default_location()
    try:
        return _ensure_private_dir(path)
    except PermissionError as exc:
        if _fallback_dir is None:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="symsm-cache-"))
            warnings.warn(
                f"symsm cache location {path} is not writable ({exc.strerror}); using the private temporary "
                f"directory {_fallback_dir} for this process (set {ENV_VAR} to choose another)",
                RuntimeWarning,
                stacklevel=3,
            )
        return _fallback_dir


def _ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheError(f"cache directory {path} is owned by another user (uid {st.st_uid}); refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"cache directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "refusing to use it — run chmod 700 on it or choose another location"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "not writable", str(path))
    return path


def module_path(key: str, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"symsm_{key[:32]}.py"


def load_or_generate(key: str, generate: Callable[[], str]) -> tuple[ModuleType, Path, str]:
    """The module for `key`: from memory, else from a verified file, else generated, written and imported.

    `generate()` returns the module text, which must contain the line ``# cache-key: <key>``.
    Returns (module, path, source text without the content-hash line).
    """
    start = time.perf_counter()
    with _lock:
        if key in _modules:
            mod = _modules[key]
            _record("memory", key, Path(mod.__file__ or ""), start)
            return mod, Path(mod.__file__ or ""), mod.__symsm_source__
        path = module_path(key)
        source = _read_verified(path, key)
        if source is not None:
            kind = "loaded"
        else:
            if path.exists():
                _record("rejected", key, path, start)
            source = generate()
            if f"# cache-key: {key}" not in source:
                raise CacheError("generated source does not record its cache key")
            _atomic_write(path, _with_hash(source))
            kind = "generated"
        module = _import(path, key, source)
        module.__symsm_source__ = source
        _modules[key] = module
        _record(kind, key, path, start)
        return module, path, source


def _record(kind: str, key: str, path: Path, start: float) -> None:
    _events.append(CacheEvent(kind, key, str(path), time.perf_counter() - start))


def _with_hash(source: str) -> str:
    return f"{HASH_PREFIX}{hashlib.sha256(source.encode()).hexdigest()}\n{source}"


def _read_verified(path: Path, key: str) -> str | None:
    """The source in `path` if its recorded hash matches its content and it is the module for `key`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError, OSError):
        return None
    first, _, rest = text.partition("\n")
    if not first.startswith(HASH_PREFIX):
        return None
    if hashlib.sha256(rest.encode()).hexdigest() != first[len(HASH_PREFIX) :].strip():
        return None
    if f"# cache-key: {key}\n" not in rest:
        return None
    return rest


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _import(path: Path, key: str, source: str) -> ModuleType:
    """Execute exactly the verified `source` as the module at `path`.

    The code object is compiled from the text that was checked (not re-read from disk), so a file swapped
    after the check is never executed; its real filename lets numba's `cache=True` index it.
    """
    name = f"symsm_generated_{key[:32]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise CacheError(f"cannot import generated module {path}")
    module = importlib.util.module_from_spec(spec)
    code = compile(_with_hash(source), str(path), "exec", dont_inherit=True)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def info() -> dict[str, Any]:
    """Location, number of generated modules and total size of the cache."""
    directory = default_location()
    files = sorted(directory.glob("symsm_*.py")) if directory.is_dir() else []
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0
    return {"directory": str(directory), "modules": len(files), "bytes": size}


def clear() -> int:
    """Remove every generated module and numba cache file; returns the number of files removed."""
    directory = default_location()
    if not directory.is_dir():
        return 0
    removed = 0
    for p in sorted(directory.rglob("*"), reverse=True):
        if p.is_file() and (p.name.startswith(("symsm_", ".symsm_")) or p.parent.name == "__pycache__"):
            p.unlink()
            removed += 1
        elif p.is_dir() and p.name == "__pycache__" and not any(p.iterdir()):
            p.rmdir()
    with _lock:
        _modules.clear()
    return removed
