"""Score matching for compositions (``Model(domain="simplex", transform=...)``), against references that share
no code with symsm:

* the square-root map z = √u to the positive part of the sphere: the Dirichlet's per-sample integrand against
  the sphere objective written by hand in z, with log f(z²) + Σ log z_j (the Jacobian) differentiated by hand,
  for the weights 1, minsq = min(min_j z_j², a_c²) and prodsq = min(∏_j z_j², a_c²), and the θ-gradient against
  central differences;
* the additive log-ratio map y = alr(u): the integrand on ℝ^{d−1} against the Dirichlet's density of y
  differentiated by hand (score α_i − (Σα) u_i), and the closed form against numpy;
* rows off the simplex (negative, not summing to 1, zeros under alr) refused with the first offending row.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.core.errors import ModelError

U = sp.symbols("u0:3", real=True)
ALPHA = sp.symbols("a0:3", real=True)
THETA = np.array([0.6, 1.7, 3.2])


def dirichlet(**kwargs) -> symsm.Model:
    log_f = sum((a - 1) * sp.log(u) for a, u in zip(ALPHA, U, strict=True))
    return symsm.Model(log_f, U, list(ALPHA), name="dirichlet3", domain="simplex", **kwargs)


def compositions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet([2.0, 3.0, 4.0], size=n)


def hand_sqrt(alpha: np.ndarray, U: np.ndarray, weight: str, a_c: float = 0.1) -> np.ndarray:
    """The weighted sphere objective in z = √u for g(z) = Σ (2α_j − 1) log z_j (log f(z²) plus the Jacobian):
    ∇g = c/z, ∇²g = diag(−c/z²), c = 2α − 1, with Δ_S g = Σ∂ᵢ²g − zᵀ∇²g z − 2 zᵀ∇g (d = 3)."""
    Z = np.sqrt(U)
    c = 2 * alpha - 1
    grad = c / Z
    a = np.sum(Z * grad, 1)
    lap = np.sum(-c / Z**2, 1) + np.sum(c) - 2 * a  # −zᵀ diag(−c/z²) z = Σ c
    core = 0.5 * (np.sum(grad**2, 1) - a**2) + lap
    if weight == "ones":
        return core
    if weight == "minsq":
        j = np.argmin(Z, 1)
        m = Z[np.arange(len(Z)), j] ** 2
        h = np.minimum(m, a_c**2)
        dh = np.zeros_like(Z)
        dh[np.arange(len(Z)), j] = np.where(m < a_c**2, 2 * Z[np.arange(len(Z)), j], 0.0)
    else:  # prodsq
        prod = np.prod(Z**2, 1)
        h = np.minimum(prod, a_c**2)
        dh = np.where((prod < a_c**2)[:, None], 2 * prod[:, None] / Z, 0.0)
    za = np.sum(Z * dh, 1)
    return h * core + np.sum(dh * grad, 1) - za * a


def _fd(fun, theta, eps=1e-6):
    return np.array([(fun(theta + eps * e) - fun(theta - eps * e)) / (2 * eps) for e in np.eye(theta.size)])


def _weight_backends():
    return ["ones", "minsq", "prodsq"]


@pytest.mark.parametrize("weight", _weight_backends())
@pytest.mark.parametrize("path", ["sympy", "graph"])
def test_sqrt_map_against_numpy(weight, path) -> None:
    X = compositions(400, 1)
    model = dirichlet(transform="sqrt", weight=weight, **({} if weight == "ones" else {"a_c": 0.1}))
    loss = model.compile(path=path)
    ref = hand_sqrt(THETA, X, weight)
    if weight != "ones":  # under a boundary weight J̃ is reported without its θ-free terms (finite at zeros)
        ref = ref - hand_sqrt(0 * THETA, X, weight)
    np.testing.assert_allclose(loss.per_sample(THETA, X), ref, rtol=1e-10, atol=1e-10)
    J, grad = loss.value_and_grad(THETA, X)
    np.testing.assert_allclose(J, np.mean(ref), rtol=1e-11)
    np.testing.assert_allclose(grad, _fd(lambda t: np.mean(hand_sqrt(t, X, weight)), THETA), rtol=1e-6, atol=1e-7)


def hand_alr(alpha: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Σᵢ [∂ᵢ² + ½(∂ᵢ)²] of log f(u(y)) + Σ_j log u_j = Σ_j α_j log u_j(y), i < d: score α_i − (Σα)u_i,
    ∂ᵢ² = −(Σα) u_i (1 − u_i)."""
    s = alpha[:-1] - alpha.sum() * U[:, :-1]
    hd = -alpha.sum() * U[:, :-1] * (1 - U[:, :-1])
    return np.sum(hd + 0.5 * s**2, 1)


@pytest.mark.parametrize("path", ["sympy", "graph"])
def test_alr_against_numpy(path) -> None:
    X = compositions(400, 2)
    loss = dirichlet(transform="alr").compile(path=path)
    ref = hand_alr(THETA, X)
    np.testing.assert_allclose(loss.per_sample(THETA, X), ref, rtol=1e-11, atol=1e-11)
    J, grad = loss.value_and_grad(THETA, X)
    np.testing.assert_allclose(J, np.mean(ref), rtol=1e-11)
    np.testing.assert_allclose(grad, _fd(lambda t: np.mean(hand_alr(t, X)), THETA), rtol=1e-6, atol=1e-7)


def test_closed_forms_against_numpy() -> None:
    """Both maps keep the Dirichlet an exponential family: the fit is θ̂ = −A⁻¹b, with A, b the second and first
    differences of the hand-written (quadratic) objective."""
    X = compositions(3000, 3)
    for model, hand in [
        (dirichlet(transform="alr"), hand_alr),
        (dirichlet(transform="sqrt", weight="minsq", a_c=0.2), lambda t, U: hand_sqrt(t, U, "minsq", 0.2)),
    ]:
        J = lambda th: np.mean(hand(th, X))  # noqa: B023, E731
        E, zero = np.eye(3), np.zeros(3)
        A = np.array([[J(E[i] + E[j]) - J(E[i]) - J(E[j]) + J(zero) for j in range(3)] for i in range(3)])
        b = np.array([(J(E[i]) - J(-E[i])) / 2 for i in range(3)])
        res = symsm.fit(model, X)
        assert res.method == "closed_form"
        np.testing.assert_allclose(res.theta, -np.linalg.solve(A, b), rtol=1e-8)
        assert np.all(np.abs(res.theta - [2.0, 3.0, 4.0]) < 5 * res.se)  # the truth, within its SEs


def test_zeros_under_minsq() -> None:
    """A composition with a zero lies on the boundary, where minsq vanishes: accepted. Under alr only where the
    score in y is a polynomial in u (the Dirichlet's, α_i − (Σα)u_i: the limit from inside) and never in the
    last part, the alr denominator."""
    X = compositions(20, 4)
    X[5] = [0.0, 0.4, 0.6]
    alr = dirichlet(transform="alr").compile()
    assert np.isfinite(alr.value(THETA, X))
    X[5] = [0.4, 0.6, 0.0]
    with pytest.raises(ValueError, match=r"row 5, column 2 \(u2\)"):
        alr.value(THETA, X)


def test_rows_off_the_simplex_are_refused() -> None:
    X = compositions(10, 5)
    loss = dirichlet(transform="sqrt", weight="minsq").compile()
    bad = X.copy()
    bad[4] *= 1.01
    with pytest.raises(ValueError, match=r"row 4, with sum 1\.0(1|09)"):
        loss.value(THETA, bad)
    bad = X.copy()
    bad[2] = [-0.1, 0.5, 0.6]
    with pytest.raises(ValueError, match=r"row 2, column 0 \(u0\): -0\.1"):
        loss.value(THETA, bad)


def test_bad_arguments() -> None:
    with pytest.raises(ModelError, match="transform must be one of"):
        dirichlet(transform="clr")
    with pytest.raises(ModelError, match="do not apply to transform='alr'"):
        dirichlet(transform="alr", weight="minsq")
    with pytest.raises(ModelError, match="weight on the simplex must be one of"):
        dirichlet(transform="sqrt", weight="u0**2")


@pytest.mark.parametrize("name", ["ppi_5d", "dirichlet_minsq"])
def test_compact_boundary_integrand_equals_the_expanded_one(name) -> None:
    """The compact integrand under a boundary weight (`ManifoldParts.boundary_integrand`) against the plain
    integrand expanded with its θ-free terms dropped, at random points; for the PPI (β fixed: the θ-terms of the
    score carry z_j) also at points with a zero coordinate, where the compact form must stay finite."""
    from symsm.derive.derivation import ManifoldParts
    from symsm.model.modelfile import load_model

    model = load_model("ppi_5d") if name == "ppi_5d" else dirichlet(transform="sqrt", weight="minsq", a_c=0.1)
    geometry, params = model.geometry, tuple(model.params)
    parts = ManifoldParts.derive(geometry, params)
    table: dict = {}
    plain = ManifoldParts.integrand(geometry, parts.score, parts.hessian_diag, table)
    expanded = ManifoldParts.without_theta_free_terms(plain, params)
    hidden = dict(parts.hidden)
    assert sorted(map(str, table)) == sorted(map(str, hidden.values()))  # the same weight pieces
    same = {table[expr]: sym for sym, expr in parts.hidden}  # each piece's symbol in `expanded` → in the compact
    symbols = [*geometry.coords, *params, *hidden]
    compact_f = sp.lambdify(symbols, parts.objective, "math")
    expanded_f = sp.lambdify(symbols, expanded.xreplace(same), "math")
    rng = np.random.default_rng(7)
    zero_coords = range(len(geometry.coords)) if name == "ppi_5d" else []
    for trial in range(20):
        v = rng.uniform(0.05, 1.0, len(symbols))
        v[len(geometry.coords) : len(geometry.coords) + len(params)] = rng.normal(size=len(params))
        for j in [None, *zero_coords]:
            if j is not None:
                v[j] = 0.0
            a, b = compact_f(*v), expanded_f(*v)
            assert np.isfinite(a), (trial, j)
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12 * (1 + abs(b))), (trial, j)
