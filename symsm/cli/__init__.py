"""Stage 7 — the command line (`symsm derive | codegen | fit | latex | demo | cache`)."""

from .main import main

__all__ = ["main"]
