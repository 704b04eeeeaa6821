"""Bounds on the work and memory of a block of code, instead of wall-clock limits that flake on a busy machine.

`bounded_work` counts the operands sympy flattens into sums and products in the block (`Add.flatten` and
`Mul.flatten`: the work of building expressions, which the formula parser bounds, and which hostile input such
as a large sum re-wrapped many times would multiply), and the peak of the memory Python allocates in it
(`tracemalloc`: syntax trees, huge exact numbers), and asserts both bounds when the block ends. Neither depends on
the machine's speed or load, so a bound can sit a small factor above what the code needs today.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp


@dataclass
class Work:
    operands: int = 0  # operands given to Add.flatten / Mul.flatten
    peak_bytes: int = 0  # allocated at the peak, above what was allocated when the block began


@contextmanager
def bounded_work(*, max_operands: int, max_peak_bytes: int) -> Iterator[Work]:
    """Count the block's work and allocation peak; assert `operands ≤ max_operands`, `peak ≤ max_peak_bytes`."""
    work = Work()
    originals = {cls: cls.__dict__["flatten"] for cls in (sp.Add, sp.Mul)}

    def counting(original: classmethod) -> classmethod:
        function = original.__func__

        def flatten(cls, seq):
            work.operands += len(seq)
            return function(cls, seq)

        return classmethod(flatten)

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for cls, original in originals.items():
        cls.flatten = counting(original)
    try:
        yield work
    finally:
        for cls, original in originals.items():
            cls.flatten = original
        work.peak_bytes = max(0, tracemalloc.get_traced_memory()[1] - base)
        if not was_tracing:
            tracemalloc.stop()
    assert work.operands <= max_operands, f"sympy flattened {work.operands} operands, the bound is {max_operands}"
    assert work.peak_bytes <= max_peak_bytes, f"peak {work.peak_bytes} bytes allocated, the bound is {max_peak_bytes}"
