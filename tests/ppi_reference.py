r"""Independent numpy reference for score matching of the PPI model on the sphere (Scealy & Wood 2023).

Written from the mathematics below (Scealy & Wood 2023, JASA 118:1811, Sections 2-3 and Appendix A;
Mardia, Kent & Laha 2016, arXiv:1604.08470; the model and weight definitions in the documentation of the R
package scorematchingad), not from symsm, so that symsm's manifold score matching can be checked against it.

The model
---------
The PPI (polynomially-tilted pairwise interaction) density on the simplex Δ^{p-1} = {u : u_j ≥ 0, Σ u_j = 1},
with respect to the (p-1)-dimensional Lebesgue measure on the simplex, is

    f_U(u) ∝ exp(u_Lᵀ A_L u_L + b_Lᵀ u_L) ∏_{j=1}^p u_j^{β_j},

u_L = (u_1, …, u_{p-1}), A_L a symmetric (p-1)×(p-1) matrix, b_L ∈ R^{p-1}, β ∈ R^p (β_j > -1).

The square-root map and its Jacobian
------------------------------------
z = √u (component-wise) maps the simplex onto the positive orthant of the unit sphere S^{p-1}_+; its inverse
is u_j = z_j². The (p-1)-dimensional Jacobian of z ↦ u from the sphere's surface measure to the simplex
measure is ∝ ∏_j z_j (the constant 2^{p-1}√p drops out), so the density of z on the sphere is

    f_S(z) ∝ f_U(z²) ∏ z_j,
    log f_S(z) = ℓ(z) = Σ_{i,j<p} A_ij z_i² z_j² + Σ_{j<p} b_j z_j² + Σ_{j≤p} (1 + 2β_j) log z_j.

ℓ is linear in the free parameters. With β fixed, write ℓ(z; θ) = θᵀ t(z) + t₀(z) with

    θ = (A_11, …, A_{p-1,p-1},  A_ij (i < j),  b_1, …, b_{p-1})          (b omitted when b_L ≡ 0 is fixed)
    t(z) = (z_j⁴,  2 z_i² z_j²,  z_j²)        (the 2: A_ij and A_ji share one parameter)
    t₀(z) = Σ_j (1 + 2β_j) log z_j            (the fixed part).

The order of θ is scorematchingad's paramvec order: the diagonal of A_L, then its upper triangle column by
column ((1,2), (1,3), (2,3), (1,4), …, i.e. R's ``A[upper.tri(A)]``), then b_L. β is fixed, so it is not in θ.
t_i are homogeneous polynomials of degree k_i (4 for the A entries, 2 for b).

Weighted score matching on the sphere
-------------------------------------
For a function g on R^p restricted to the unit sphere, with P(z) = I - zzᵀ the tangent projection,

    tangential gradient   ∇_S g = P ∇g,
    Laplace-Beltrami      Δ_S g = Δg - zᵀ(∇²g)z - (p-1) zᵀ∇g       (at |z| = 1),

so for a homogeneous polynomial of degree k (zᵀ∇g = k g, zᵀ∇²g z = k(k-1) g):

    P∇g = ∇g - k g z,   Δ_S g = Δg - k(k+p-2) g.

With a boundary weight h(z)² that vanishes on the boundary of the orthant, the weighted Hyvärinen divergence
is, after integration by parts (Scealy & Wood 2023 eq. 7 and Theorem 1; Mardia, Kent & Laha 2016), up to a
θ-free constant, the expectation of

    ψ(z; θ) = h² (½ |P∇ℓ|² + Δ_S ℓ) + (P∇h²)ᵀ(P∇ℓ).

Because ℓ is linear in θ, ψ is quadratic: ψ = ½ θᵀ W(z) θ - d(z)ᵀ θ + const with

    W_ab(z) = h² (P∇t_a)ᵀ(P∇t_b) = h² (∇t_aᵀ∇t_b - k_a k_b t_a t_b),
    d_a(z)  = -[ h² Δ_S t_a + (P∇h²)ᵀ(P∇t_a) + h² (P∇t_a)ᵀ(P∇t₀) ].

The last term carries the fixed β: (P∇t_a)ᵀ(P∇t₀) = Σ_j (1+2β_j) (∂_j t_a)/z_j - k_a t_a Σ_j (1+2β_j), where
(∂_j t_a)/z_j is a polynomial (4 z_j², 4 z_other², 2), so zeros in the data cause no division by zero.
The estimator minimises the (optionally weighted) sample mean ψ̄(θ) = ½ θᵀ W̄ θ - d̄ᵀ θ:

    θ̂ = W̄⁻¹ d̄,   W̄ = Σ_k w_k W(z_k) / Σ_k w_k,   d̄ likewise.

Sign convention: W̄ is the Hessian of ψ̄ (positive definite) and d̄ = -∇ψ̄(0); scorematchingad's
hard-coded estimator is "solve(W, d)" with these W and d.

Boundary weights (a_c the threshold)
------------------------------------
    minsq:   h² = min(min_j z_j², a_c²);   ∇h² = 2 z_m e_m where m = argmin_j z_j and z_m < a_c, else 0.
    prodsq:  h² = min(∏_j z_j², a_c²);     ∇h² = 2 ∏z² (1/z_1, …, 1/z_p) where ∏ z_j² < a_c², else 0.

(P∇h²)ᵀ(P∇t_a) = ∇h²ᵀ∇t_a - (zᵀ∇h²) k_a t_a, with zᵀ∇h² = 2 z_m² (minsq) or 2p ∏z² (prodsq).

Standard errors (sandwich, as scorematchingad's hard-coded estimator computes them)
-----------------------------------------------------------------------------------
The estimating function of observation k is s_k(θ) = W(z_k) θ - d(z_k) (the θ-gradient of ψ). Then

    Σ̂ = Σ_k w_k s_k(θ̂) s_k(θ̂)ᵀ / Σ_k w_k,   V̂ = W̄⁻¹ Σ̂ W̄⁻¹ / Σ_k w_k,   SE = √diag(V̂).

(Σ̂ is not centred; its mean is zero at θ̂ anyway. With unit weights Σ_k w_k = n.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PPISqrtFit:
    """The closed-form fit: θ̂, the per-observation quadratic forms and the sandwich SEs."""

    theta: np.ndarray  # θ̂ in paramvec order (diag A_L, upper triangle by column, then b_L if fitted)
    W: np.ndarray  # W̄, the Hessian of the mean objective
    d: np.ndarray  # d̄
    W_obs: np.ndarray  # (n, m, m): W(z_k)
    d_obs: np.ndarray  # (n, m): d(z_k)
    se: np.ndarray  # sandwich standard errors of θ̂
    names: tuple[str, ...]


def upper_pairs(q: int) -> list[tuple[int, int]]:
    """(i, j), i < j, 0-based, ordered column by column like R's which(upper.tri(A))."""
    return [(i, j) for j in range(q) for i in range(j)]


def param_names(p: int, include_bL: bool = True) -> tuple[str, ...]:
    q = p - 1
    names = [f"A{j + 1}{j + 1}" for j in range(q)] + [f"A{i + 1}{j + 1}" for i, j in upper_pairs(q)]
    if include_bL:
        names += [f"b{j + 1}" for j in range(q)]
    return tuple(names)


def A_from_theta(theta: np.ndarray, p: int) -> np.ndarray:
    """The symmetric A_L from the first (p-1) + (p-1)(p-2)/2 entries of θ."""
    q = p - 1
    A = np.diag(np.asarray(theta[:q], dtype=float))
    for (i, j), v in zip(upper_pairs(q), theta[q:], strict=False):
        A[i, j] = A[j, i] = v
    return A


def _statistics(z: np.ndarray, include_bL: bool):
    """t(z) (n, m), degrees k (m,), G̃ with G̃[:, a, j] = (∂_j t_a)/z_j (n, m, p), Euclidean Laplacian Δt (n, m)."""
    n, p = z.shape
    q = p - 1
    z2 = z * z
    t_cols, k, gz, lap = [], [], [], []
    for j in range(q):  # A_jj: z_j⁴
        t_cols.append(z2[:, j] ** 2)
        k.append(4)
        g = np.zeros((n, p))
        g[:, j] = 4 * z2[:, j]
        gz.append(g)
        lap.append(12 * z2[:, j])
    for i, j in upper_pairs(q):  # A_ij: 2 z_i² z_j²
        t_cols.append(2 * z2[:, i] * z2[:, j])
        k.append(4)
        g = np.zeros((n, p))
        g[:, i] = 4 * z2[:, j]
        g[:, j] = 4 * z2[:, i]
        gz.append(g)
        lap.append(4 * (z2[:, i] + z2[:, j]))
    if include_bL:
        for j in range(q):  # b_j: z_j²
            t_cols.append(z2[:, j])
            k.append(2)
            g = np.zeros((n, p))
            g[:, j] = 2.0
            gz.append(g)
            lap.append(np.full(n, 2.0))
    return np.stack(t_cols, 1), np.array(k, float), np.stack(gz, 1), np.stack(lap, 1)


def _boundary_weight(z: np.ndarray, acut: float, bdryw: str) -> tuple[np.ndarray, np.ndarray]:
    """h² (n,) and ∇h² (n, p) for the named boundary weight."""
    n, p = z.shape
    z2 = z * z
    grad = np.zeros((n, p))
    if bdryw == "minsq":
        m = np.argmin(z, axis=1)
        zmin2 = z2[np.arange(n), m]
        active = zmin2 < acut**2
        h2 = np.where(active, zmin2, acut**2)
        grad[np.arange(n)[active], m[active]] = 2 * z[np.arange(n)[active], m[active]]
    elif bdryw == "prodsq":
        prod2 = np.prod(z2, axis=1)
        active = prod2 < acut**2
        h2 = np.where(active, prod2, acut**2)
        # 2 ∏z² / z_j = 2 z_j ∏_{i≠j} z_i², written without division
        for j in range(p):
            others = np.prod(np.delete(z2, j, axis=1), axis=1)
            grad[:, j] = np.where(active, 2 * z[:, j] * others, 0.0)
    else:
        raise ValueError(f"bdryw must be 'minsq' or 'prodsq', got {bdryw!r}")
    return h2, grad


def quadratic_parts(
    u: np.ndarray, beta: np.ndarray, acut: float, include_bL: bool = True, bdryw: str = "minsq"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation W(z_k) (n, m, m) and d(z_k) (n, m) of ψ for compositions u (n, p), β fixed."""
    u = np.asarray(u, dtype=float)
    beta = np.asarray(beta, dtype=float).ravel()
    p = u.shape[1]
    if beta.shape != (p,):
        raise ValueError(f"beta must have {p} entries, got {beta.shape}")
    z = np.sqrt(u)
    t, k, gz, lap = _statistics(z, include_bL)
    grad_t = gz * z[:, None, :]  # ∇t_a = G̃ ∘ z
    h2, grad_h2 = _boundary_weight(z, acut, bdryw)
    # Gram of tangential gradients: ∇t_aᵀ∇t_b - k_a k_b t_a t_b
    gram = np.einsum("nap,nbp->nab", grad_t, grad_t) - (k[:, None] * k[None, :]) * np.einsum("na,nb->nab", t, t)
    W_obs = h2[:, None, None] * gram
    lap_S = lap - (k * (k + p - 2))[None, :] * t
    z_grad_h2 = np.einsum("np,np->n", z, grad_h2)
    bdry = np.einsum("np,nap->na", grad_h2, grad_t) - z_grad_h2[:, None] * k[None, :] * t
    c = 1 + 2 * beta
    cross = np.einsum("nap,p->na", gz, c) - k[None, :] * t * c.sum()
    d_obs = -(h2[:, None] * lap_S + bdry + h2[:, None] * cross)
    return W_obs, d_obs


def fit_ppi_sqrt(
    u: np.ndarray,
    beta: np.ndarray,
    acut: float,
    include_bL: bool = True,
    bdryw: str = "minsq",
    w: np.ndarray | None = None,
) -> PPISqrtFit:
    """θ̂ = W̄⁻¹ d̄ and its sandwich standard errors (see the module docstring)."""
    W_obs, d_obs = quadratic_parts(u, beta, acut, include_bL, bdryw)
    n = W_obs.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, dtype=float)
    sw = w.sum()
    W = np.einsum("n,nab->ab", w, W_obs) / sw
    d = w @ d_obs / sw
    theta = np.linalg.solve(W, d)
    s = np.einsum("nab,b->na", W_obs, theta) - d_obs
    Sigma = (s * w[:, None]).T @ s / sw
    Winv = np.linalg.inv(W)
    V = Winv @ Sigma @ Winv / sw
    p = np.asarray(u).shape[1]
    return PPISqrtFit(theta, W, d, W_obs, d_obs, np.sqrt(np.diag(V)), param_names(p, include_bL))


def microbiome_tcap(counts: np.ndarray, columns: list[str]) -> np.ndarray:
    """The five-part compositions (TM7, Cyanobacteria/Chloroplast, Actinobacteria, Proteobacteria, pool).

    Proportions are counts over the row total of all 20 phylum columns; the pool is |1 - u1 - u2 - u4 - u3|,
    subtracted in that order as scorematchingad's test helper does (the order fixes the last bits).
    """
    counts = np.asarray(counts, dtype=float)
    prop = counts / counts.sum(axis=1, keepdims=True)
    col = {c: i for i, c in enumerate(columns)}
    c1, c2, c3, c4 = (prop[:, col[c]] for c in ("TM7", "Cyanobacteria/Chloroplast", "Actinobacteria", "Proteobacteria"))
    pool = np.abs(1 - c1 - c2 - c4 - c3)
    return np.stack([c1, c2, c3, c4, pool], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# The alr estimator and Windham's robustification (Scealy, Hingee, Kent & Wood 2024)
# ---------------------------------------------------------------------------------------------------------------


def alr_quadratic_parts(u: np.ndarray, beta_p: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-observation W (n, m, m) and d (n, m) of score matching of the PPI model after the alr map.

    Score matching of the PPI model with b_L = 0 and β_p fixed, after the additive log-ratio map.

    y_j = log(u_j / u_p), j < p, maps the open simplex onto R^{p-1}; u_i = e^{y_i}/(1 + Σ e^{y}), and
    ∂u_i/∂y_j = u_i(δ_ij - u_j) (i < p), ∂u_p/∂y_j = -u_p u_j. The Jacobian of y ↦ u is ∏_{i≤p} u_i, so

        log f_Y(y) = u_Lᵀ A_L u_L + Σ_{i≤p} α_i log u_i,   α_i = β_i + 1,

    linear in θ = (diag A_L, upper triangle of A_L by column, α_1, …, α_{p-1}) with statistics
    t = (u_j², 2 u_i u_j, log u_j) and the fixed part t₀ = α_p log u_p. Unweighted (h ≡ 1) Hyvärinen score
    matching in R^{p-1}: ψ = ½|∇_y ℓ|² + Δ_y ℓ, so W = mean ∇_y t ∇_y tᵀ, d = -mean(Δ_y t + ∇_y t · ∇_y t₀), with

        ∇_y log u_i = e_i - u_L,   ∇_y log u_p = -u_L,   Δ_y log u_i = -Σ_{j<p} u_j(1 - u_j),
        ∂²u_i/∂y_j² = u_i[(δ_ij - u_j)² - u_j(1 - u_j)],
        Δ_y g(u_L) = Σ_j [ (J_{·j})ᵀ ∇²g J_{·j} + Σ_i ∂_i g ∂²u_i/∂y_j² ].

    Every term is a polynomial in u, so zero components need no special handling.
    """
    u = np.asarray(u, dtype=float)
    n, p = u.shape
    q = p - 1
    uL = u[:, :q]
    eye = np.eye(q)
    J = uL[:, :, None] * (eye[None] - uL[:, None, :])  # J[n, i, j] = ∂u_i/∂y_j
    d2u = uL[:, :, None] * ((eye[None] - uL[:, None, :]) ** 2 - (uL * (1 - uL))[:, None, :])  # ∂²u_i/∂y_j²
    grads, laps = [], []
    # A_L statistics: gradient in u_L and constant Hessian in u_L
    stats = [((j,), 2.0) for j in range(q)] + [((i, j), 2.0) for i, j in upper_pairs(q)]
    for idx, _ in stats:
        gu = np.zeros((n, q))
        H = np.zeros((q, q))
        if len(idx) == 1:
            (j,) = idx
            gu[:, j] = 2 * uL[:, j]
            H[j, j] = 2.0
        else:
            i, j = idx
            gu[:, i] = 2 * uL[:, j]
            gu[:, j] = 2 * uL[:, i]
            H[i, j] = H[j, i] = 2.0
        grads.append(np.einsum("ni,nij->nj", gu, J))
        laps.append(np.einsum("nij,ik,nkj->n", J, H, J) + np.einsum("ni,nij->n", gu, d2u))
    lap_log = -(uL * (1 - uL)).sum(axis=1)
    for i in range(q):
        grads.append(eye[i][None, :] - uL)
        laps.append(lap_log)
    G = np.stack(grads, 1)  # (n, m, q)
    lap = np.stack(laps, 1)  # (n, m)
    grad_t0 = -(beta_p + 1) * uL
    return np.einsum("nai,nbi->nab", G, G), -(lap + np.einsum("nai,ni->na", G, grad_t0))


def fit_ppi_alr(u: np.ndarray, beta_p: float, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """θ̂ = W̄⁻¹d̄ for :func:`alr_quadratic_parts` with observation weights w.

    Returns the full PPI paramvec (diag A_L, upper A_L by column, b_L = 0, β with β_j = α_j - 1) and W̄.
    """
    W_obs, d_obs = alr_quadratic_parts(u, beta_p)
    n, p = np.asarray(u).shape
    q = p - 1
    w = np.ones(n) if w is None else np.asarray(w, dtype=float)
    W = np.einsum("n,nab->ab", w, W_obs) / w.sum()
    d = w @ d_obs / w.sum()
    sol = np.linalg.solve(W, d)
    nA = q + q * (q - 1) // 2
    paramvec = np.concatenate([sol[:nA], np.zeros(q), sol[nA:] - 1, [beta_p]])
    return paramvec, W


def ppi_log_density_unnormalised(u: np.ndarray, paramvec: np.ndarray) -> np.ndarray:
    """u_Lᵀ A_L u_L + b_Lᵀ u_L + Σ β_j log u_j, with u_j^0 taken as 1 (so zeros are allowed where β_j = 0)."""
    u = np.asarray(u, dtype=float)
    p = u.shape[1]
    q = p - 1
    nA = q + q * (q - 1) // 2
    A = A_from_theta(paramvec[:nA], p)
    b = paramvec[nA : nA + q]
    beta = paramvec[nA + q :]
    uL = u[:, :q]
    out = np.einsum("ni,ij,nj->n", uL, A, uL) + uL @ b
    for j in range(p):
        if beta[j] != 0:
            out = out + beta[j] * np.log(u[:, j])
    return out


def windham_ppi_alr(
    u: np.ndarray, cW: np.ndarray, start: np.ndarray, beta_p: float, tol: float = 1e-10, max_iter: int = 10_000
) -> tuple[np.ndarray, int]:
    r"""Windham (1995) robustification of :func:`fit_ppi_alr`, in the form of scorematchingad's ``Windham()``.

    For an exponential family with natural parameters linear in θ, weighting observations by f(z; c∘θ)
    turns a population with parameter θ into one with parameter (1 + c)∘θ. Windham's method iterates

        w_k ∝ exp(log f(u_k; c∘θ_n)),   θ̃ = estimator(u, w),   θ_{n+1} = θ̃ / (1 + c)   (element-wise)

    to a fixed point (simple iteration, stopping when max |θ_{n+1} - θ_n| < tol over the fitted entries).
    ``cW`` has one tuning constant per paramvec entry (zero for fixed entries and for β here).
    (scorematchingad's density also gives weight 0 to rows whose sum differs from 1 by more than 1e-15; no row
    of the microbiome data does, so that rule is not reproduced here.)
    Returns the estimate and the number of iterations.
    """
    theta = np.asarray(start, dtype=float).copy()
    cW = np.asarray(cW, dtype=float)
    for it in range(1, max_iter + 1):
        lw = ppi_log_density_unnormalised(u, cW * theta)
        w = np.exp(lw)
        w = w / w.sum()
        new, _ = fit_ppi_alr(u, beta_p, w)
        new = new / (1 + cW)
        if np.max(np.abs(new - theta)) < tol:
            return new, it
        theta = new
    return theta, max_iter
