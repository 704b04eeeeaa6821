"""Cyclic coordinate descent for J̃ + λ‖θ_S‖₁ on A kept as blocks of Gram matrices (numba; loaded through
symsm's verified cache from a copy of this text, so numba's machine code lands in the private cache directory;
see penalized.py)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True, inline="always")
def _soft_threshold(z, t):
    """The minimiser of ½(u − z)² + t|u| (t ≥ 0): one coordinate's exact update."""
    if z > t:
        return z - t
    if z < -t:
        return z + t
    return 0.0


@numba.njit(cache=True, nogil=True)
def coordinate_descent_blocks(
    occ_ptr, occ_block, occ_pos, ptr, cols, fidx, gram, goff, gdim, own, diag, theta, grad, lam, active, tol, max_sweeps
):
    """Sweeps over `active` until no coordinate moves its own gradient by more than tol; grad (= Aθ + b) is
    updated in place. A is kept as blocks (symsm.runtime.sparse.BlockQuadratic): moving θ_j by δ adds
    δ·G_b[f_l, f_m] to grad at every parameter l of every block b where j sits at position m. `own`: every
    block's rows f are 0, 1, … (each block has its own Gram matrix)."""
    for sweep in range(max_sweeps):
        biggest = 0.0
        for jj in range(active.size):
            j = active[jj]
            a = diag[j]
            new = _soft_threshold(theta[j] - grad[j] / a, lam[j] / a)
            delta = new - theta[j]
            if delta != 0.0:
                theta[j] = new
                for o in range(occ_ptr[j], occ_ptr[j + 1]):
                    b = occ_block[o]
                    start = ptr[b]
                    stride = gdim[b]
                    row = goff[b] + fidx[start + occ_pos[o]] * stride  # G_b is symmetric: its row, read in order
                    if own:  # block b's Gram matrix is its own block: position q − start is its column
                        row -= start
                        for q in range(start, ptr[b + 1]):
                            grad[cols[q]] += gram[row + q] * delta
                    else:
                        for q in range(start, ptr[b + 1]):
                            grad[cols[q]] += gram[row + fidx[q]] * delta
                change = abs(delta) * a
                if change > biggest:
                    biggest = change
        if biggest <= tol:
            return sweep + 1
    return max_sweeps
