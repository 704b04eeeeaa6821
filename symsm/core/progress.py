"""Progress of long derivations: each stage and its elapsed time, on request (`verbose=True`, `--verbose`).

Stages run in the calling thread, so Ctrl-C (KeyboardInterrupt) stops them at once; nothing half-written is
ever used, because generated modules reach the cache only through an atomic rename (symsm/core/cache.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports `stage` blocks to `stream` when enabled; silent (and nearly free) otherwise."""

    def __init__(self, enabled: bool = False, stream: TextIO | None = None, prefix: str = "symsm") -> None:
        self.enabled = bool(enabled)
        self.stream = stream
        self.prefix = prefix
        self.start = time.perf_counter()

    def log(self, message: str) -> None:
        if self.enabled:
            out = self.stream or sys.stderr
            print(f"[{self.prefix} {time.perf_counter() - self.start:7.2f} s] {message}", file=out, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        self.log(f"{name} ...")
        try:
            yield
        except KeyboardInterrupt:
            self.log(f"{name} interrupted")
            raise
        self.log(f"{name} done in {time.perf_counter() - t:.2f} s")
