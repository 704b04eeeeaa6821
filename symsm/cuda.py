"""The CUDA backend's run-time helpers, public: device detection, the simulator switch, data resident on the
GPU and the CUDA loss (the implementation is symsm.runtime.device; this module re-exports its public names)."""

from .runtime import device as _implementation
from .runtime.device import *  # noqa: F403

__all__ = list(_implementation.__all__)
