"""Progress of long operations: each stage and its elapsed time, and a fit's iterations.

* `verbose=True` (`--verbose`): every stage (and every iteration of a fit) is reported on stderr, terminal or not.
* By default (`verbose=False`) nothing is written — except on a terminal, where a stage that has run for more
  than `LIVE_DELAY` seconds (a long compile) is announced while it runs, and a fit that has run that long shows
  one live line (stage, iteration, J̃, |∇J̃|), rewritten in place. Logs, pipes and notebooks stay quiet.

Stages run in the calling thread, so Ctrl-C (KeyboardInterrupt) stops them at once; nothing half-written is
ever used, because generated modules reach the cache only through an atomic rename (symsm/core/cache.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["LIVE_DELAY", "IterationProgress", "Progress", "is_terminal"]

LIVE_DELAY = 2.0  # seconds a stage or fit runs before a terminal shows it without --verbose


def is_terminal(stream: TextIO | None) -> bool:
    """True when `stream` (default stderr) is an interactive terminal."""
    out = stream or sys.stderr
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Reports `stage` blocks to `stream`: all of them when enabled; when not, on a terminal only, a stage
    that has run for `delay` seconds (see the module docstring); silent (and nearly free) otherwise."""

    def __init__(
        self, enabled: bool = False, stream: TextIO | None = None, prefix: str = "symsm", delay: float = LIVE_DELAY
    ) -> None:
        self.enabled = bool(enabled)
        self.stream = stream
        self.prefix = prefix
        self.delay = delay
        self.live = not self.enabled and is_terminal(stream)
        self.start = time.perf_counter()

    def _write(self, message: str) -> None:
        out = self.stream or sys.stderr
        print(f"[{self.prefix} {time.perf_counter() - self.start:7.2f} s] {message}", file=out, flush=True)

    def log(self, message: str) -> None:
        if self.enabled:
            self._write(message)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        announced = threading.Event()
        timer: threading.Timer | None = None
        if self.enabled:
            self._write(f"{name} ...")
        elif self.live:

            def announce() -> None:
                announced.set()
                self._write(f"{name} ... (running for {self.delay:g} s; --verbose shows every stage)")

            timer = threading.Timer(self.delay, announce)
            timer.daemon = True
            timer.start()
        try:
            yield
        except KeyboardInterrupt:
            if self.enabled or announced.is_set():
                self._write(f"{name} interrupted")
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self.enabled or announced.is_set():
            self._write(f"{name} done in {time.perf_counter() - t:.2f} s")


class IterationProgress:
    """A fit's progress: stage, iteration, J̃ and |∇J̃|.

    verbose: one line per update on `stream`, terminal or not. Otherwise, on a terminal, one live line rewritten
    in place (at most 10 times a second) once the fit has run `delay` seconds, finished by `close`; elsewhere
    nothing.
    """

    def __init__(
        self, verbose: bool = False, stream: TextIO | None = None, prefix: str = "symsm", delay: float = LIVE_DELAY
    ) -> None:
        self.verbose = bool(verbose)
        self.stream = stream
        self.prefix = prefix
        self.live = not self.verbose and is_terminal(stream)
        self.delay = delay
        self.start = time.perf_counter()
        self._last = 0.0
        self._shown = False

    @property
    def enabled(self) -> bool:
        return self.verbose or self.live

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def update(self, stage: str, iteration: int, value: float, grad_norm: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        text = (
            f"[{self.prefix} {now - self.start:7.2f} s] {stage}: iteration {iteration}, "
            f"J̃ = {value:.10g}, |∇J̃| = {grad_norm:.3g}"
        )
        if self.verbose:
            print(text, file=self._out(), flush=True)
            return
        if now - self.start < self.delay or now - self._last < 0.1:
            return
        self._last = now
        self._shown = True
        print(f"\r{text}\x1b[K", end="", file=self._out(), flush=True)

    def note(self, message: str) -> None:
        """A line of its own (verbose only): how a stage ended."""
        if self.verbose:
            print(f"[{self.prefix} {time.perf_counter() - self.start:7.2f} s] {message}", file=self._out(), flush=True)

    def close(self) -> None:
        """End the live line (if one was shown)."""
        if self._shown:
            print(file=self._out(), flush=True)
            self._shown = False
