"""The numpy reference executor of block programs (symsm/ir/block_format.py): exact, memory-bounded, not fast."""

from .executor import BlockKernel
from .generate import generate_blocks_source

__all__ = ["BlockKernel", "generate_blocks_source"]
