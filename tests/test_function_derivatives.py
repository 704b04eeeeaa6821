"""Every function a model may use, on both derivation paths, in float64 and float32.

One small model per function F: log f = b·x·F(a·x + c) − x²/2 with θ = (a, b, c), built from a formula string
(through the parser's allow-list) for the functions of `symsm.model.parse.FUNCTIONS`, and from sympy for the
functions the expression graph differentiates beyond it (asin, acos, acosh) and for a power with a parameter in
the exponent. The factor x keeps F itself in the score (b·F(z) + a·b·x·F′(z)), so the θ-gradient differentiates
F, F′ and F″ again, and the sympy path's tape applies its own rule for F (with b·F(z), F drops out of the
integrand). The rows put z = a·x + c across F's domain and near its edges (atanh and asin near ±1, acosh
near 1, log1p near −1, log and sqrt near 0, tan near π/2, erfc at large arguments, expm1 near 0).

The score, the integrand Σ ∂ᵢ² log f + ½(∂ᵢ log f)², J̃ and ∇θJ̃ are compared with log f evaluated by mpmath at
50 digits and differentiated by central differences (tests/references.py): in x for the score and ∂ᵢ², and in
θ — of the mpmath J̃ itself — for the gradient. Nothing of symsm's derivation enters the references.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
from references import DPS, LogDensity

import symsm
from symsm.core.functions import BY_NAME
from symsm.model.parse import FUNCTIONS

BACKEND = "numba"  # the default CPU backend (to be renamed "llvm"); test_paths.py covers the others
PATHS = ("sympy", "graph")
DTYPES = {"float64": (np.float64, 1e-9), "float32": (np.float32, 3e-3)}
THETA = np.array([0.8, 0.7, 0.1])  # a, b, c

# z = a·x + c at the rows: the function's domain, its edges included. float32 skips the rows marked edge-only
# where float32 itself cannot resolve the function (1 − z² at z = 0.99999 is all rounding error).
ARGUMENTS: dict[str, tuple[list[float], list[float]]] = {
    # name: (rows for both dtypes, extra rows for float64 only)
    "exp": ([-2.0, -0.5, 0.0, 0.7, 2.0], []),
    "log": ([2e-3, 0.05, 0.5, 1.0, 3.0], [1e-5]),
    "sqrt": ([2e-3, 0.05, 0.5, 1.0, 3.0], [1e-6]),
    "sin": ([-3.0, -1.0, 0.0, 0.4, 2.5], []),
    "cos": ([-3.0, -1.0, 0.0, 0.4, 2.5], []),
    "tan": ([-1.4, -0.5, 0.0, 0.3, 1.45], [1.5695]),
    "sinh": ([-3.0, -0.6, 0.0, 0.5, 2.5], []),
    "cosh": ([-3.0, -0.6, 0.0, 0.5, 2.5], []),
    "tanh": ([-4.0, -0.6, 0.0, 0.5, 2.5], [12.0]),
    "atan": ([-6.0, -0.6, 0.0, 0.5, 4.0], []),
    "asinh": ([-6.0, -0.6, 0.0, 0.5, 40.0], []),
    "atanh": ([-0.995, -0.6, 0.0, 0.5, 0.99], [0.99999, -0.99999]),
    "erf": ([-3.0, -0.6, 0.0, 0.5, 2.5], []),
    "erfc": ([-1.0, 0.0, 1.5, 3.5, 5.0], [8.0]),
    "log1p": ([-0.995, -0.5, 0.0, 1e-7, 3.0], [-0.99999]),
    "expm1": ([-2.0, -1e-6, 1e-7, 1e-3, 1.5], [1e-12]),
    "asin": ([-0.995, -0.5, 0.0, 0.4, 0.99], [0.99999]),
    "acos": ([-0.995, -0.5, 0.0, 0.4, 0.99], [-0.99999]),
    "acosh": ([1.002, 1.05, 1.5, 3.0, 20.0], [1.00001]),
    "pow": ([0.05, 0.3, 1.0, 2.0, 4.0], []),  # z**a with a parameter exponent (the "powv" node)
}
SYMPY_ONLY = {"asin": sp.asin, "acos": sp.acos, "acosh": sp.acosh}


def test_every_allow_listed_function_has_a_model() -> None:
    smooth = {name for name in FUNCTIONS if BY_NAME[name].smooth}  # min, max: weights only (test_piecewise_weights)
    assert smooth <= set(ARGUMENTS), sorted(smooth - set(ARGUMENTS))


def make_model(name: str) -> symsm.Model:
    label = f"fn_{name}"
    if name in FUNCTIONS:
        return symsm.Model.from_string(f"b*x*{name}(a*x + c) - x**2/2", "x", "a b c", name=label)
    x = sp.Symbol("x", real=True)
    a, b, c = sp.symbols("a b c", real=True)
    z = a * x + c
    inner = z**a if name == "pow" else SYMPY_ONLY[name](z)
    return symsm.Model(b * x * inner - x**2 / 2, [x], [a, b, c], name=label)


def rows(name: str, dtype_name: str) -> np.ndarray:
    both, extra = ARGUMENTS[name]
    z = np.array(both + (extra if dtype_name == "float64" else []))
    a, _, c = THETA
    return ((z - c) / a).reshape(-1, 1)


class Compiled:
    """The function models and their compiled losses, each made once per session."""

    def __init__(self) -> None:
        self._models: dict = {}
        self._losses: dict = {}

    def model(self, name: str) -> symsm.Model:
        if name not in self._models:
            self._models[name] = make_model(name)
        return self._models[name]

    def loss(self, name: str, path: str, dtype_name: str):
        key = (name, path, dtype_name)
        if key not in self._losses:
            self._losses[key] = self.model(name).compile(backend=BACKEND, dtype=DTYPES[dtype_name][0], path=path)
        return self._losses[key]


@pytest.fixture(scope="session")
def compiled() -> Compiled:
    return Compiled()


def _mp_objective(logf: LogDensity, theta: list, X: np.ndarray) -> mpmath.mpf:
    """J̃ at the working precision: the mean over rows of Σᵢ ∂ᵢ² log f + ½(∂ᵢ log f)², by differences."""
    h = mpmath.mpf("1e-25")
    total = mpmath.mpf(0)
    for row in X:
        x = mpmath.mpf(float(row[0]))
        f0, fp, fm = (logf._f([x + k * h], theta) for k in (0, 1, -1))
        s = (fp - fm) / (2 * h)
        total += (fp - 2 * f0 + fm) / h**2 + s * s / 2
    return total / len(X)


def _mp_gradient(logf: LogDensity, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    h = mpmath.mpf("1e-12")
    with mpmath.workdps(2 * DPS):  # differences of differences: the inner step's rounding must stay far below h
        th = [mpmath.mpf(float(t)) for t in theta]
        out = []
        for k in range(len(th)):
            up, down = list(th), list(th)
            up[k] += h
            down[k] -= h
            out.append(float((_mp_objective(logf, up, X) - _mp_objective(logf, down, X)) / (2 * h)))
    return np.array(out)


@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_function(compiled: Compiled, name: str, path: str, dtype_name: str) -> None:
    dtype, rtol = DTYPES[dtype_name]
    loss = compiled.loss(name, path, dtype_name)
    # the references see exactly the numbers the kernels see (θ and X rounded to the dtype)
    theta = THETA.astype(dtype).astype(float)
    X = rows(name, dtype_name).astype(dtype).astype(float)
    logf = LogDensity(loss.model)
    score, second = logf.derivatives(theta, X)
    integrand = np.sum(second + 0.5 * score**2, axis=1)

    def close(actual, expected, what):
        expected = np.asarray(expected, float)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol, err_msg=f"{name} {path} {what}")

    close(loss.score(theta, X), score, "score")
    close(loss.per_sample(theta, X), integrand, "integrand")
    value, grad = loss.value_and_grad(theta, X)
    close(value, np.mean(integrand), "J")
    close(loss.value(theta, X), np.mean(integrand), "value kernel")
    # ∇θ row by row: in the mean over rows, the rows near a singularity (∂² of atanh near 1 is ~1e15) would
    # swamp an error at the others
    row_grads = [_mp_gradient(logf, theta, X[t : t + 1]) for t in range(X.shape[0])]
    for t, expected in enumerate(row_grads):
        close(loss.value_and_grad(theta, X[t : t + 1])[1], expected, f"∇θ of the integrand at row {t}")
    close(grad, np.mean(row_grads, axis=0), "∇θJ")
