"""How the host backends split the rows of X into blocks (shared by every backend whose kernels run on the
CPU: the split depends only on the number of rows, so results do not depend on the number of threads)."""

from __future__ import annotations

__all__ = ["MAX_BLOCKS", "ROWS_PER_BLOCK"]

ROWS_PER_BLOCK = 2048  # rows per block at least: keeps per-block overhead negligible
MAX_BLOCKS = 256  # blocks at most: the partial sums stay O(P) in memory, and 2–64 cores stay busy
