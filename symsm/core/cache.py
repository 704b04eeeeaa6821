"""Content-addressed cache of generated kernel modules.

Generated modules are Python code that symsm imports, and the machine code of their kernels is kept next to
them (symsm/backends/llvm/native.py: object files with a verified header; numba's pickles for the numba-python
backend), so whoever can write the cache directory can run code in every process that uses it. The cache
is therefore private and verified:

* The key is a sha256 of everything that determines the generated text: the canonical model, the
  backend, the dtype, the objective and its options, the symsm version and a digest of the templates and
  code generator (so a changed generator never serves stale code).
* Each file starts with a line recording the sha256 of the rest of its bytes; it is checked before every
  import, together with the header line that names the key the file was generated for. A corrupt,
  truncated or foreign file is regenerated, never imported; the code object is compiled from exactly the
  bytes that were checked, never re-read.
* Files are written to a temporary name in the same directory and renamed (atomic): concurrent
  processes compiling the same model leave one valid file, and readers never see a partial one.
* The directory is created with mode 0700 (an existing one of ours is tightened to it); a directory
  owned by another user or writable by group or others is refused, as is one inside a directory that
  anyone may rename entries of (world-writable without the sticky bit) and a `NUMBA_CACHE_DIR` (where
  numba would then keep its pickles) that is not private. numba's own cache files live in `__pycache__`
  inside the directory, so the same protection covers them.
* If the location cannot be written (read-only file system, no permission, not a directory), a private
  temporary directory is used for the rest of the process instead, with a warning, and removed at exit.
  A location that is unsafe is an error, not a fallback: it is a configuration to fix, not to route around.
* Modules are imported from their files with importlib, so numba's `cache=True` works and a second
  process neither regenerates the source nor recompiles the kernels.

`SYMSM_CACHE_DIR` overrides the location (default `$XDG_CACHE_HOME/symsm` or `~/.cache/symsm`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
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

__all__ = ["CacheEvent", "cache_dir", "cache_key", "clear", "default_location", "events", "info", "load_or_generate"]

HASH_PREFIX = "# symsm-content-sha256: "
KEY_PREFIX = "# cache-key: "
KEY_HEADER_LINES = 40  # the key line must be in the file's header, not anywhere in its body
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
_lock = threading.RLock()
_fallback_dir: Path | None = None


def events() -> list[CacheEvent]:
    """The cache's record of what it did in this process, oldest first."""
    return list(_events)


def cache_key(**parts: Any) -> str:
    """sha256 of the JSON of `parts` (sorted keys): the identity of one generated module."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_location() -> Path:
    """The configured location: `$SYMSM_CACHE_DIR`, else `$XDG_CACHE_HOME/symsm`, else `~/.cache/symsm`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "symsm").absolute()


def cache_dir() -> Path:
    """The cache directory, created 0700 and checked to be private; a private temporary one if unwritable.

    Raises `CacheError` when the location exists but is not safe to use (another owner, writable by
    others, inside a directory where others may replace it).
    """
    _check_numba_cache_dir()
    path = default_location()
    try:
        return _ensure_private_dir(path)
    except CacheError:
        raise
    except OSError as exc:
        return _fallback(path, exc)


def _fallback(path: Path, exc: OSError) -> Path:
    global _fallback_dir
    with _lock:
        if _fallback_dir is None:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="symsm-cache-"))  # mode 0700, ours
            atexit.register(shutil.rmtree, _fallback_dir, ignore_errors=True)
            reason = exc.strerror or str(exc)
            warnings.warn(
                f"symsm cache location {path} cannot be used ({reason}); using the private temporary "
                f"directory {_fallback_dir} for this process (set {ENV_VAR} to choose another)",
                RuntimeWarning,
                stacklevel=4,
            )
        return _fallback_dir


def _ensure_private_dir(path: Path) -> Path:
    _check_ancestors(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a directory", str(path))
    _check_private(path, st, "cache directory")
    if stat.S_IMODE(st.st_mode) & 0o077:
        with contextlib.suppress(OSError):  # ours and not writable by others: readable is merely loose
            path.chmod(0o700)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "not writable", str(path))
    return path


def _check_private(path: Path, st: os.stat_result, what: str) -> None:
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheError(f"{what} {path} is owned by another user (uid {st.st_uid}); refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it — run chmod 700 on it or choose another location"
        )


def _check_ancestors(path: Path) -> None:
    """Refuse a location inside a directory where anyone may rename or replace entries (o+w, no sticky bit)."""
    for parent in path.absolute().parents:
        try:
            st = parent.stat()
        except OSError:
            continue  # does not exist yet (it will be created by us) or cannot be inspected
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise CacheError(
                f"cache directory {path} is inside {parent}, which everyone may write to without the sticky "
                f"bit (mode {stat.S_IMODE(st.st_mode):o}), so others could replace it; choose another location"
            )


def _check_numba_cache_dir() -> None:
    """numba keeps its pickled machine code in NUMBA_CACHE_DIR when that is set: it must be private too."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    numba_config = sys.modules.get("numba.core.config")
    numba_dir = getattr(numba_config, "CACHE_DIR", None) if numba_config is not None else None
    if numba_dir:
        configured = str(numba_dir)
    if not configured:
        return
    path = Path(configured).expanduser()
    try:
        st = path.stat()
    except OSError:
        return  # numba creates it when it first writes, as this user
    _check_private(path, st, "NUMBA_CACHE_DIR")


def module_path(key: str, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"symsm_{key[:32]}.py"


def load_or_generate(key: str, generate: Callable[[], str]) -> tuple[ModuleType, Path, str]:
    """The module for `key`: from memory, else from a verified file, else generated, written and imported.

    `generate()` returns the module text, which must contain the line ``# cache-key: <key>`` in its
    header. Returns (module, path, source text without the content-hash line).
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
            if path.exists() or path.is_symlink():
                _record("rejected", key, path, start)
            source = generate()
            if not _records_key(source, key):
                raise CacheError("generated source does not record its cache key in its header")
            try:
                _atomic_write(path, _with_hash(source))
            except OSError as exc:  # the directory became unwritable (full disk, read-only remount)
                path = module_path(key, _fallback(path.parent, exc))
                _atomic_write(path, _with_hash(source))
            kind = "generated"
        module = _import(path, key, source)
        module.__dict__["__symsm_source__"] = source  # the verified text, for shipping to Dask workers
        _modules[key] = module
        _record(kind, key, path, start)
        return module, path, source


def _record(kind: str, key: str, path: Path, start: float) -> None:
    _events.append(CacheEvent(kind, key, str(path), time.perf_counter() - start))


def record(kind: str, key: str, path: Path, start: float) -> None:
    """Add an event (e.g. machine code compiled or loaded, symsm/backends/llvm/native.py) to this process's record."""
    with _lock:
        _record(kind, key, path, start)


def read_private_file(path: Path) -> bytes | None:
    """The bytes of `path` if it is a plain file (not a link) in the cache, else None."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file 0600 in the same directory, then rename)."""
    _atomic_write(path, data)


def _with_hash(source: str) -> str:
    return f"{HASH_PREFIX}{hashlib.sha256(source.encode()).hexdigest()}\n{source}"


def _records_key(source: str, key: str) -> bool:
    header = source.split("\n", KEY_HEADER_LINES)[:KEY_HEADER_LINES]
    return f"{KEY_PREFIX}{key}" in header


def _read_verified(path: Path, key: str) -> str | None:
    """The source in `path` if the sha256 of its bytes matches its first line and its header names `key`."""
    data = read_private_file(path)  # a symlink or anything but a plain file is not ours
    if data is None:
        return None
    first, sep, rest = data.partition(b"\n")
    if not sep or not first.startswith(HASH_PREFIX.encode()):
        return None
    if hashlib.sha256(rest).hexdigest().encode() != first[len(HASH_PREFIX) :].strip():
        return None
    try:
        source = rest.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return source if _records_key(source, key) else None


def _atomic_write(path: Path, text: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
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


def _own_files(directory: Path) -> list[Path]:
    """symsm's files in `directory`: generated modules, their temporaries and numba's cache files for them.

    Walks without following symbolic links; files of other programs in the directory are not symsm's.
    """
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        here = Path(root)
        dirs[:] = [d for d in dirs if d == "__pycache__" and here == directory]
        for name in files:
            if name.startswith(("symsm_", ".symsm_")):
                found.append(here / name)
    return sorted(found)


def info() -> dict[str, Any]:
    """Where the cache is, whether it can be used, how many generated modules and bytes it holds."""
    directory = default_location()
    out: dict[str, Any] = {"directory": str(directory), "exists": directory.is_dir(), "status": "ok"}
    try:
        _check_numba_cache_dir()
        _check_ancestors(directory)
        if directory.is_dir():
            _check_private(directory, directory.stat(), "cache directory")
            if not os.access(directory, os.W_OK | os.X_OK):
                out["status"] = "not writable: a private temporary directory is used instead"
    except CacheError as exc:
        out["status"] = f"refused: {exc}"
    files = _own_files(directory) if directory.is_dir() else []
    out["modules"] = sum(1 for p in files if p.parent == directory and p.name.endswith(".py"))
    out["object_files"] = sum(1 for p in files if p.parent == directory and p.suffix == ".o")
    out["numba_files"] = sum(1 for p in files if p.parent.name == "__pycache__")
    out["bytes"] = sum(p.lstat().st_size for p in files)
    if _fallback_dir is not None:
        out["fallback_directory"] = str(_fallback_dir)
    return out


def clear() -> int:
    """Remove every generated module and numba cache file of symsm; returns the number of files removed.

    Only symsm's own files are removed, and only from a directory that passes the same checks as for
    use (a directory owned by someone else is refused, not emptied).
    """
    directory = default_location()
    if not directory.is_dir():
        return 0
    _check_ancestors(directory)
    _check_private(directory, directory.stat(), "cache directory")
    removed = 0
    for p in _own_files(directory):
        p.unlink(missing_ok=True)
        removed += 1
    pycache = directory / "__pycache__"
    if pycache.is_dir() and not pycache.is_symlink() and not any(pycache.iterdir()):
        pycache.rmdir()
    with _lock:
        _modules.clear()
    return removed
