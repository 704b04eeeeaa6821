"""The kernels every backend generates, as backend-independent IR, and the names of their symbols."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import sympy as sp

from .ir import KernelIR, build_forward_ir, build_value_and_grad_ir
from .kernel_set import SUMS, KernelSet, loss_kernels

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..derive.objectives import Objective

__all__ = [
    "BOUND_DESCRIPTIONS",
    "N_SAMPLES_NAME",
    "SYMPY_BUDGET",
    "WEIGHT_COLUMN",
    "build_bound_kernels",
    "build_kernels",
    "build_kernels_sympy",
    "symbol_names",
]

N_SAMPLES_NAME = "n_samples"  # the name the templates give the number of rows in every epilogue

# (graph nodes of log f) × d up to which kernels are built from sympy's derivation. Measured at d = 8
# (benchmarks/stages.py, --path sympy against graph): ICA log cosh (1352) 2.0 s of derivation and kernel IR
# against 0.6 s, with kernels of the same length and speed; below ~1000 sympy costs well under a second and
# its rational tidying can give shorter kernels (Student-t d = 8, 584: 144 against 200 operations per row).
SYMPY_BUDGET = 1000


def build_kernels(derivation: Derivation, objective: Objective | None = None) -> KernelSet:
    """The kernels of the derivation's model.

    `objective` (default: the exact one) builds the per-sample integrand; see symsm/derive/objectives.py. Small
    models with the plain exact objective go through sympy's derivation (its rational tidying and CSE give
    the shortest kernels);
    large ones — (size of log f) × d beyond SYMPY_BUDGET, where sympy's tree differentiation and CSE grow like
    d³ and worse — through automatic differentiation on the expression graph (symsm/derive/graph.py), which
    builds ICA with d = 32 in seconds instead of about a minute. Both are exact; the tests check them
    against each other. `derivation.path` ("sympy" or "graph") overrides the choice; sympy's path builds the
    exact objective only (weighted or not), so asking it for a sliced or denoising objective raises ValueError.
    """
    from .graph_kernels import ModelGraph, build_graph_kernels

    graph = ModelGraph(derivation.model, objective)
    plain = graph.objective.exact and not graph.aux_symbols
    if derivation.path == "sympy" and not plain:
        raise ValueError(
            f"path='sympy' builds the exact objective only; the {graph.objective.name!r} objective is built "
            "on the expression graph (path='graph' or 'auto')"
        )
    small = len(graph.graph.reachable([graph.log_f])) * derivation.model.dim <= SYMPY_BUDGET
    if derivation.path == "sympy" or (derivation.path == "auto" and plain and small):
        kernels = build_kernels_sympy(derivation)
    else:
        kernels = build_graph_kernels(derivation.model, graph)
    # On the sphere and the simplex the moment-matching points (symsm/runtime/moments.py) are off the domain, which
    # the rows' checks refuse: those models evaluate on the data themselves.
    on_manifold = getattr(derivation.model, "geometry", None) is not None
    kernels.data_degree = math.inf if on_manifold else graph.degree_in_data()
    return kernels


#: the observation weight w_t, read as one more data column by the bound kernels of a weighted objective
WEIGHT_COLUMN = sp.Dummy("w", real=True)

BOUND_DESCRIPTIONS = {
    "rest_value_and_grad": "[J_R, dJ_R/dtheta...]: mean over rows of the inseparable part R and its gradient.",
    "rest_value": "[J_R]: mean over rows of the integrand's inseparable part R.",
    "separable_sums": "[L_0, L_1...]: means over rows of the theta-free terms and theta coefficients of the integrand.",
}


def build_bound_kernels(
    derivation: Derivation, objective: Objective | None = None, *, weighted: bool = False
) -> KernelSet | None:
    """The kernels of a bound objective (`CompiledLoss.bind`): the integrand split as R + L₀ + Σₖ θₖLₖ
    (symsm/derive/separable.py), ``rest_value_and_grad`` and ``rest_value`` of R and ``separable_sums`` of
    [L₀, L₁, …] (means over rows: the latter once per data set). `weighted`: every kernel reads one more data
    column, the observation weight w_t (`WEIGHT_COLUMN`), and sums w_t·(·).

    Only where the loss's kernels come from the sympy integrand (the exact objective of a model small enough
    for the sympy path, or the sqrt-mapped simplex's compact integrand); None otherwise, and None where nothing
    separates and the objective is unweighted (the loss's own kernels are then the bound ones)."""
    from ..derive.derivation import ManifoldParts
    from ..derive.separable import split_separable
    from ..derive.stable import stable_derivation
    from .graph_kernels import ModelGraph

    model = derivation.model
    if derivation.path not in ("auto", "sympy"):
        return None
    graph = ModelGraph(model, objective)
    if not graph.objective.exact or graph.aux_symbols:
        return None
    geometry = getattr(model, "geometry", None)
    compact = geometry is not None and ManifoldParts.boundary_safe(geometry)
    small = len(graph.graph.reachable([graph.log_f])) * model.dim <= SYMPY_BUDGET
    if derivation.path == "auto" and not (small or compact):
        return None  # a large model: its sympy integrand would cost what the graph path avoids
    stable = stable_derivation(derivation)
    theta = tuple(model.params)
    parts = split_separable(stable.objective, theta)
    if not parts.separated and not weighted:
        return None
    w = WEIGHT_COLUMN if weighted else sp.S.One
    data = (*model.data, WEIGHT_COLUMN) if weighted else tuple(model.data)
    rest = w * parts.rest
    kernels = KernelSet()
    kernels.add(
        "rest_value_and_grad",
        build_value_and_grad_ir(rest, theta, data),
        SUMS,
        BOUND_DESCRIPTIONS["rest_value_and_grad"],
    )
    kernels.add("rest_value", build_forward_ir([rest], theta, data, mode="sum"), SUMS, BOUND_DESCRIPTIONS["rest_value"])
    if parts.separated:
        separable = [w * e for e in (parts.const, *parts.coeffs)]
        kernels.add(
            "separable_sums",
            build_forward_ir(separable, theta, data, mode="sum"),
            SUMS,
            BOUND_DESCRIPTIONS["separable_sums"],
        )
    return kernels


def build_kernels_sympy(derivation: Derivation) -> KernelSet:
    """The same kernels from sympy's derivation (slower to build; kept as an independent cross-check), of
    log f rewritten into a stable form where it has log-sum-exp patterns (symsm/derive/stable.py)."""
    from ..derive.stable import stable_derivation

    derivation = stable_derivation(derivation)
    theta, x = derivation.params, derivation.data
    integrand = derivation.objective
    return loss_kernels(
        value_and_grad=build_value_and_grad_ir(integrand, theta, x),
        value=build_forward_ir([integrand], theta, x, mode="sum"),
        per_sample=build_forward_ir([integrand], theta, x, mode="per_sample"),
        score=build_forward_ir(list(derivation.score), theta, x, mode="per_sample"),
    )


def symbol_names(theta: tuple[sp.Symbol, ...], data: tuple[sp.Symbol, ...], *irs: KernelIR) -> dict[sp.Symbol, str]:
    """Identifiers for every symbol the kernels read: p_<param>, x_<data>, and the IR's own temporaries."""
    names: dict[sp.Symbol, str] = {}
    taken: set[str] = set()

    def claim(sym: sp.Symbol, base: str) -> None:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names[sym] = name

    # Every kernel's sample count is the local the templates bind (`n_samples = float(n)`), whatever the kernel.
    taken.add(N_SAMPLES_NAME)
    for ir in irs:
        names[ir.n_symbol] = N_SAMPLES_NAME
    for p in theta:
        claim(p, "p_" + _identifier(str(p)))
    for xi in data:
        claim(xi, "x_" + _identifier(str(xi)))
    for ir in irs:
        for sym in _generated_symbols(ir):
            if sym not in names:
                claim(sym, sym.name)
    return names


def _generated_symbols(ir: KernelIR) -> list[sp.Symbol]:
    syms = [a.target for a in (*ir.prologue, *ir.body, *ir.epilogue)]
    return [*syms, *ir.sum_symbols]


def _identifier(text: str) -> str:
    ident = re.sub(r"\W", "_", text, flags=re.ASCII)
    return ident if ident and not ident[0].isdigit() else "_" + ident
