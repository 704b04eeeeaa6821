"""Score matching on Dask arrays, public: ``symsm.distributed.value_and_grad(loss, theta, X)`` and friends
(the implementation is symsm.runtime.dask; this module re-exports its public names)."""

from .runtime import dask as _implementation
from .runtime.dask import *  # noqa: F403

__all__ = list(_implementation.__all__)
