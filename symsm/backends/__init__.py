"""Stage 4 — backends: one package per backend (printer, templates, generator, kernel runtime), and the
registry of them (`get_backend`, `backend_names`; see registry.py and README.md)."""

from .registry import DEFAULT_BACKEND, Backend, backend_names, backends, get_backend

__all__ = ["DEFAULT_BACKEND", "Backend", "backend_names", "backends", "get_backend"]
