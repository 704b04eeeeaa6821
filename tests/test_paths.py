"""Every shared model through every derivation path and every CPU backend, against independent references.

The models are those of tests/models.py (hand-written numpy score and ∂ᵢ² log f) and tests/domain_models.py
(models on [0, ∞)ᵈ with their weights written out by hand). Each compiled loss is checked against

* the hand-written references: J̃, the integrand per row, the score, and ∇θJ̃ by central differences of the
  hand-written J̃;
* central differences of log f itself, evaluated by mpmath at 50 digits (tests/references.py): the score and
  the integrand built from ∂ᵢ log f and ∂ᵢ² log f — the exact objective, the weighted one on [0, ∞)ᵈ, and the
  variants (sliced, sliced_vr, denoising; graph path only) with the loss's own draws.

Every (model, path, backend, objective) is compiled once per session.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from domain_models import nonnegative_ggm, truncated_normal
from models import CASES
from references import LogDensity, fd_gradient

# The CPU backends and derivation paths under test. "numba" is the default CPU backend (to be renamed "llvm",
# with "numba" kept as an alias); "numba-python" prints the same IR as numba Python and is slow to compile
# (~8 s a model on an idle machine), so it runs on one model per path unless SYMSM_ALL_BACKENDS=1: six functions
# through sympy's path, and a weighted model on [0, ∞) (its h and h′ printed too) through the graph.
BACKENDS = ("numba", "numba-python")
PATHS = ("sympy", "graph")
SLOW_BACKENDS = ("numba-python",)
SLOW_BACKEND_MODELS = (("smooth_functions", "sympy"), ("truncated_normal_one_minus_exp", "graph"))
ALL_BACKENDS = os.environ.get("SYMSM_ALL_BACKENDS") == "1"
ROWS = 24  # rows checked against the mpmath references (each row costs 2d + 1 evaluations at 50 digits)

DOMAIN_CASES = {
    "truncated_normal_t2": lambda: truncated_normal("t2"),
    "truncated_normal_t2_bounded": lambda: truncated_normal("t2_bounded"),
    "truncated_normal_one_minus_exp": lambda: truncated_normal("one_minus_exp"),
    "nonnegative_ggm_t2": lambda: nonnegative_ggm("t2"),
    "nonnegative_ggm_t2_bounded_cubic": lambda: nonnegative_ggm("t2_bounded", cubic=True),
}
ALL_CASES = {**CASES, **DOMAIN_CASES}

VARIANTS = {
    "sliced": {"objective": "sliced", "n_directions": 2},
    "sliced_gaussian": {"objective": "sliced", "n_directions": 1, "directions": "gaussian"},
    "sliced_vr": {"objective": "sliced_vr", "n_directions": 2},
    "denoising": {"objective": "denoising", "noise_scale": 0.3, "n_directions": 2},
}


def _combinations():
    for name in ALL_CASES:
        for path in PATHS:
            for backend in BACKENDS:
                if backend in SLOW_BACKENDS and not ALL_BACKENDS and (name, path) not in SLOW_BACKEND_MODELS:
                    continue
                yield pytest.param(name, path, backend, id=f"{name}-{path}-{backend}")


class Compiled:
    """The cases, their compiled losses and their mpmath log-densities, each made once per session."""

    def __init__(self) -> None:
        self._cases: dict = {}
        self._losses: dict = {}
        self._logf: dict = {}

    def case(self, name: str):
        if name not in self._cases:
            self._cases[name] = ALL_CASES[name]()
        return self._cases[name]

    def loss(self, name: str, path: str, backend: str, variant: str = "exact"):
        key = (name, path, backend, variant)
        if key not in self._losses:
            options = dict(VARIANTS.get(variant, {}))
            self._losses[key] = self.case(name).model.compile(backend=backend, path=path, **options)
        return self._losses[key]

    def logf(self, name: str) -> LogDensity:
        if name not in self._logf:
            self._logf[name] = LogDensity(self.case(name).model)
        return self._logf[name]


@pytest.fixture(scope="session")
def compiled() -> Compiled:
    return Compiled()


def _close(actual, expected, rtol: float, what: str) -> None:
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize(("name", "path", "backend"), list(_combinations()))
def test_against_hand_references(compiled: Compiled, name: str, path: str, backend: str) -> None:
    """J̃, the integrand per row, the score and ∇θJ̃ against the hand-written numpy references."""
    case = compiled.case(name)
    loss = compiled.loss(name, path, backend)
    theta, X = case.theta, case.X
    assert loss.derivation_path == path and loss.derivation.path == path
    _close(loss.score(theta, X), case.score(theta, X), 1e-9, "score")
    _close(loss.per_sample(theta, X), case.integrand(theta, X), 1e-9, "integrand")
    value, grad = loss.value_and_grad(theta, X)
    _close(value, case.objective(theta, X), 1e-9, "J")
    _close(loss.value(theta, X), value, 1e-10, "value kernel")
    _close(grad, fd_gradient(lambda t: case.objective(t, X), theta), 1e-7, "∇θJ")


@pytest.mark.parametrize(("name", "path", "backend"), list(_combinations()))
def test_against_log_f(compiled: Compiled, name: str, path: str, backend: str) -> None:
    """The score and the integrand against central differences of log f (mpmath, 50 digits)."""
    case = compiled.case(name)
    loss = compiled.loss(name, path, backend)
    theta, X = case.theta, case.X[:ROWS]
    logf = compiled.logf(name)
    score, second = logf.derivatives(theta, X)
    _close(loss.score(theta, X), score, 1e-10, "score")
    if getattr(case, "weight", None) is None:
        expected = np.sum(second + 0.5 * score**2, axis=1)
    else:
        h, dh = case.weight.h(X), case.weight.dh(X)
        expected = np.sum(h * second + 0.5 * h * score**2 + dh * score, axis=1)
    _close(loss.per_sample(theta, X), expected, 1e-10, "integrand")
    _close(loss.value(theta, X), np.mean(expected), 1e-10, "J")
    grad = loss.value_and_grad(theta, X)[1]
    _close(grad, fd_gradient(lambda t: loss.value(t, X), theta), 1e-7, "∇θJ against differences of J")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_variants_against_log_f(compiled: Compiled, name: str, variant: str) -> None:
    """Sliced, variance-reduced sliced and denoising objectives (graph path) against the same objective built
    from central differences of log f, with the loss's own draws."""
    case = compiled.case(name)
    loss = compiled.loss(name, "graph", BACKENDS[0], variant)
    theta, X = case.theta, case.X[:ROWS]
    draws = loss.draws(X.shape[0]).astype(float)
    opts = VARIANTS[variant]
    logf = compiled.logf(name)
    m = opts["n_directions"]
    if opts["objective"] == "denoising":
        expected = logf.denoising(theta, X, draws, m, opts["noise_scale"])
    else:
        expected = logf.sliced(theta, X, draws, m, variance_reduced=opts["objective"] == "sliced_vr")
    _close(loss.per_sample(theta, X), expected, 1e-9, f"{variant} integrand")
    value, grad = loss.value_and_grad(theta, X)
    _close(value, np.mean(expected), 1e-9, f"{variant} J")
    _close(grad, fd_gradient(lambda t: loss.value(t, X), theta), 1e-7, f"{variant} ∇θJ")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sympy_path_refuses_variants(compiled: Compiled, variant: str) -> None:
    options = dict(VARIANTS[variant])
    model = compiled.case("student_t").model
    with pytest.raises(ValueError, match="sympy"):
        model.compile(backend=BACKENDS[0], path="sympy", **options)
