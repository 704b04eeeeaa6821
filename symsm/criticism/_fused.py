"""The fused elementwise pass of the KSD's blocked double sum (numba; imported on first use, cached on disk).

Given the block products G_ss = S_a S_bᵀ, G_xx = X_a X_bᵀ and G_cr = X_a S_bᵀ + S_a X_bᵀ, with
r² = ‖xᵢ‖² + ‖xⱼ‖² − 2 G_xx and (s(y) − s(x))ᵀ(x − y) = G_cr − sᵢᵀxᵢ − sⱼᵀxⱼ, the Stein kernel is, for
the IMQ kernel k = q^β with q = c² + r²/h²,

    u = k G_ss + (2β/h²) q^(β−1) (G_cr − sᵢᵀxᵢ − sⱼᵀxⱼ − d) − (4β(β−1)/h⁴) q^(β−2) r²,

and for the Gaussian kernel k = exp(−r²/(2h²)),

    u = k [G_ss − (G_cr − sᵢᵀxᵢ − sⱼᵀxⱼ)/h² + d/h² − r²/h⁴]

(the terms of `symsm.criticism.ksd.Kernel`, expanded; tests check both against finite differences).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def stein_rows(g_ss, g_xx, g_cr, xx_a, xx_b, sx_a, sx_b, imq, c2, beta, inv_h2, d, diagonal, u, rowsum, lo, hi):
    """Rows lo..hi of the block: u[i, j] (zero on i = j when `diagonal`) and rowsum[i] = Σⱼ u[i, j] in float64."""
    nb = g_ss.shape[1]
    a1 = 2.0 * beta * inv_h2
    a2 = 4.0 * beta * (beta - 1.0) * inv_h2 * inv_h2
    half = beta == -0.5
    for i in range(lo, hi):
        acc = 0.0
        for j in range(nb):
            r2 = xx_a[i] + xx_b[j] - 2.0 * g_xx[i, j]
            if r2 < 0.0:
                r2 = 0.0
            cross = g_cr[i, j] - sx_a[i] - sx_b[j]
            if imq:
                q = c2 + r2 * inv_h2
                k = 1.0 / math.sqrt(q) if half else q**beta
                kq = k / q
                v = k * g_ss[i, j] + a1 * kq * (cross - d) - a2 * (kq / q) * r2
            else:
                k = math.exp(-0.5 * r2 * inv_h2)
                v = k * (g_ss[i, j] - inv_h2 * cross + d * inv_h2 - r2 * inv_h2 * inv_h2)
            if diagonal and i == j:
                v = 0.0
            u[i, j] = v
            acc += v
        rowsum[i] = acc


@numba.njit(cache=True, nogil=True, error_model="numpy")
def stein_rows_dots(x_a, s_a, x_bt, s_bt, xx_a, xx_b, sx_a, sx_b, imq, c2, beta, inv_h2, diagonal, u, rowsum, lo, hi):
    """As `stein_rows`, with the inner products formed here from the rows (x_a, s_a: na × d) and the
    transposed columns (x_bt, s_bt: d × nb): for small d a fused loop beats three skinny matrix products,
    which write and read back three block² float64 matrices. Each loop over j is branch-free (the kernel
    chosen outside it), so that it compiles to SIMD instructions."""
    d = x_a.shape[1]
    nb = x_bt.shape[1]
    g_ss = np.empty(nb)
    g_xx = np.empty(nb)
    g_cr = np.empty(nb)
    row = np.empty(nb)
    for i in range(lo, hi):
        _dots(x_a[i], s_a[i], x_bt, s_bt, g_ss, g_xx, g_cr)
        xi, si = xx_a[i], sx_a[i]
        if not imq:
            _gaussian_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, inv_h2, float(d), row)
        elif beta == -0.5:
            _imq_half_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, c2, inv_h2, float(d), row)
        else:
            _imq_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, c2, beta, inv_h2, float(d), row)
        if diagonal:
            row[i] = 0.0
        acc = 0.0
        for j in range(nb):
            acc += row[j]
            u[i, j] = row[j]
        rowsum[i] = acc


@numba.njit(nogil=True, error_model="numpy", inline="always")
def _dots(x, s, x_bt, s_bt, g_ss, g_xx, g_cr):
    nb = x_bt.shape[1]
    g_ss[:] = 0.0
    g_xx[:] = 0.0
    g_cr[:] = 0.0
    for k in range(x.shape[0]):
        sk, xk = s[k], x[k]
        sb, xb = s_bt[k], x_bt[k]
        for j in range(nb):
            g_ss[j] += sk * sb[j]
        for j in range(nb):
            g_xx[j] += xk * xb[j]
        for j in range(nb):
            g_cr[j] += xk * sb[j] + sk * xb[j]


@numba.njit(nogil=True, error_model="numpy", inline="always")
def _imq_half_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, c2, inv_h2, d, row):
    a1 = -inv_h2  # 2β/h² at β = −1/2
    a2 = 3.0 * inv_h2 * inv_h2  # 4β(β−1)/h⁴
    for j in range(row.shape[0]):
        r2 = max(xi + xx_b[j] - 2.0 * g_xx[j], 0.0)
        inv_q = 1.0 / (c2 + r2 * inv_h2)
        k = np.sqrt(inv_q)  # q^(−1/2): one division and one square root per pair
        kq = k * inv_q
        row[j] = k * g_ss[j] + a1 * kq * (g_cr[j] - si - sx_b[j] - d) - a2 * (kq * inv_q) * r2


@numba.njit(nogil=True, error_model="numpy", inline="always")
def _imq_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, c2, beta, inv_h2, d, row):
    a1 = 2.0 * beta * inv_h2
    a2 = 4.0 * beta * (beta - 1.0) * inv_h2 * inv_h2
    for j in range(row.shape[0]):
        r2 = max(xi + xx_b[j] - 2.0 * g_xx[j], 0.0)
        q = c2 + r2 * inv_h2
        k = q**beta
        kq = k / q
        row[j] = k * g_ss[j] + a1 * kq * (g_cr[j] - si - sx_b[j] - d) - a2 * (kq / q) * r2


@numba.njit(nogil=True, error_model="numpy", inline="always")
def _gaussian_row(g_ss, g_xx, g_cr, xi, xx_b, si, sx_b, inv_h2, d, row):
    for j in range(row.shape[0]):
        r2 = max(xi + xx_b[j] - 2.0 * g_xx[j], 0.0)
        k = np.exp(-0.5 * r2 * inv_h2)
        row[j] = k * (g_ss[j] - inv_h2 * (g_cr[j] - si - sx_b[j]) + d * inv_h2 - r2 * inv_h2 * inv_h2)
