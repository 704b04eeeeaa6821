"""The kernels fitting needs beyond J̃ and ∇θJ̃, as backend-independent IR.

They live in modules of their own (generated on first use by `symsm.fit`, cached under keys of their own),
so compiling a loss for evaluation costs no more than before:

* ``quadratic_sums`` (objectives quadratic in θ, when A has at most `QUADRATIC_SUMS_MAX_TERMS` products
  per row): the means of Σ_i a_ik a_il (k ≤ l), b_k and c₀ in one pass — J̃ = ½θᵀAθ + bᵀθ + c₀ from one
  reduction kernel, as fast as one evaluation of J̃.
* ``quadratic_rows`` (larger quadratic objectives instead): per row t, the features
  a_ik(x_t) = ∂score_i/∂θ_k (d·P values, i-major), the per-sample b_k(x_t) (P values), c₀(x_t) and, on
  [0, ∞)ᵈ, the weights h_i(x_t) (d values); A is accumulated on the host with BLAS, chunk by chunk
  (d·P² terms per row would make a huge kernel).
* ``grad_rows``: the θ-gradient of the per-sample integrand, one row per sample (reverse accumulation,
  every θ-only temporary chained back to θ per row): the blocks of per-sample gradients for the
  sandwich's V.
* ``hessian`` (P ≤ `HESSIAN_MAX_PARAMS` only, in a module of its own): the mean over rows of the exact
  θ-Hessian of the integrand, upper triangle row by row, by forward-over-reverse accumulation on the tape.
  Larger models use central differences of the exact gradient (P sweeps over a P-output tape grow as P²).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy as sp

from .ir import KernelIR, _finish, _local_derivatives, _prepare, build_forward_ir
from .kernel_set import DESCRIPTIONS as LOSS_DESCRIPTIONS
from .kernel_set import ROW_MATRIX, SUMS, Kernel, KernelSet

if TYPE_CHECKING:
    from ..derive.derivation import Derivation, QuadraticParts
    from ..derive.objectives import Objective
    from ..model.model import Model

__all__ = [
    "HESSIAN_MAX_PARAMS",
    "QUADRATIC_SUMS_MAX_TERMS",
    "build_fit_kernels",
    "build_hessian_ir",
    "build_hessian_kernels",
    "build_objective_fit_kernels",
    "build_per_sample_grad_ir",
    "build_quadratic_form_kernels",
    "build_quadratic_rows_ir",
    "build_quadratic_sums_ir",
    "quadratic_layout",
]

HESSIAN_MAX_PARAMS = 30  # exact symbolic Hessian kernel up to this many parameters
QUADRATIC_SUMS_MAX_TERMS = 1024  # d·P(P+1)/2 products a_ik a_il per row at most in the quadratic_sums kernel


DESCRIPTIONS = {
    "quadratic_sums": "[A_kl (k <= l), b_k, c0]: means over rows; J = th.A.th/2 + b.th + c0.",
    "quadratic_rows": "out[t] = [a_ik (i-major), b_k, c0] at row t; J = th.A.th/2 + b.th + c0.",
    "quadratic_form": "[A_kl (k <= l), b_k, c0]: means over rows; J = th.A.th/2 + b.th + c0.",
    "grad_rows": "out[t, k] = d integrand / d theta_k at row t.",
    "hessian": "[d^2 J / d theta_k d theta_l for k <= l]: the mean theta-Hessian, upper triangle row by row.",
    "value_and_grad": LOSS_DESCRIPTIONS["value_and_grad"],
}


def build_objective_fit_kernels(model: Model, objective: Objective) -> KernelSet:
    """The fitting kernels of a variant objective (symsm/derive/objectives.py), built on the expression graph
    from the same integrand as the loss's kernels: ``value_and_grad`` (J̃ and ∇θJ̃ in float64, for the
    quadratic form) and ``grad_rows`` (per-row θ-gradients, for the sandwich's V). Both read the model's
    coordinates followed by the objective's auxiliary columns."""
    from .graph_kernels import ModelGraph, grad_rows_ir, value_and_grad_ir

    mg = ModelGraph(model, objective)
    return KernelSet(
        {
            "value_and_grad": Kernel(value_and_grad_ir(mg), SUMS, DESCRIPTIONS["value_and_grad"]),
            "grad_rows": Kernel(grad_rows_ir(mg), ROW_MATRIX, DESCRIPTIONS["grad_rows"]),
        }
    )


def quadratic_layout(d: int, P: int) -> str:
    """How A is accumulated for a quadratic objective: "sums" (one reduction kernel, d·P(P+1)/2 products
    per row at most `QUADRATIC_SUMS_MAX_TERMS`) or "rows" (per-row features, BLAS on the host)."""
    return "sums" if d * P * (P + 1) // 2 <= QUADRATIC_SUMS_MAX_TERMS else "rows"


def build_fit_kernels(derivation: Derivation, quadratic: str | None = None) -> KernelSet:
    """``grad_rows`` for every model; for quadratic objectives also ``quadratic_sums`` or ``quadratic_rows``
    (`quadratic` = "sums" or "rows"; by default `quadratic_layout`), generated before it."""
    theta, x = derivation.params, derivation.data
    grad_rows = build_per_sample_grad_ir(derivation.objective, theta, x)
    kernels = KernelSet()
    if derivation.is_quadratic:
        layout = quadratic or quadratic_layout(len(x), len(theta))
        if layout == "sums":
            kernels.add("quadratic_sums", build_quadratic_sums_ir(derivation), SUMS, DESCRIPTIONS["quadratic_sums"])
        elif layout == "rows":
            kernels.add(
                "quadratic_rows", build_quadratic_rows_ir(derivation), ROW_MATRIX, DESCRIPTIONS["quadratic_rows"]
            )
        else:
            raise ValueError(f"quadratic must be 'sums' or 'rows', got {layout!r}")
    kernels.add("grad_rows", grad_rows, ROW_MATRIX, DESCRIPTIONS["grad_rows"])
    return kernels


def build_hessian_kernels(derivation: Derivation) -> KernelSet:
    """The exact mean θ-Hessian kernel (for P ≤ `HESSIAN_MAX_PARAMS`; in a module of its own, since its
    symbolic second derivatives cost more to derive and compile than everything else)."""
    P = len(derivation.params)
    if P > HESSIAN_MAX_PARAMS:
        raise ValueError(f"the exact Hessian kernel is generated for P ≤ {HESSIAN_MAX_PARAMS}, got P = {P}")
    return KernelSet({"hessian": Kernel(build_hessian_ir(derivation), SUMS, DESCRIPTIONS["hessian"])})


def build_quadratic_form_kernels(derivation: Derivation) -> KernelSet:
    """The one kernel a device loss's `quadratic_form` needs: ``quadratic_form``, the IR of
    ``quadratic_sums`` whatever the size of A (on a GPU without BLAS, one reduction with P(P+1)/2 + P + 1
    per-thread sums replaces the host's per-row features + FᵀF)."""
    ir = build_quadratic_sums_ir(derivation)
    return KernelSet({"quadratic_form": Kernel(ir, SUMS, DESCRIPTIONS["quadratic_form"])})


def build_quadratic_sums_ir(derivation: Derivation) -> KernelIR:
    """Sums over rows of [Σ_i a_ik a_il for k ≤ l (row-major upper triangle of A), b_0 … b_(P−1), c₀]."""
    parts = _quadratic_parts(derivation)
    P = len(derivation.params)
    A_terms = [parts.a_term(k, l) for k in range(P) for l in range(k, P)]  # Σ_i h_i a_ik a_il (h_i = 1 on Rᵈ)
    return build_forward_ir([*A_terms, *parts.b_terms, parts.c_term], derivation.params, derivation.data, mode="sum")


def _quadratic_parts(derivation: Derivation) -> QuadraticParts:
    parts = derivation.quadratic_parts
    if parts is None:
        raise ValueError(f"model {derivation.model.name!r}: the objective is not quadratic in θ")
    return parts


def build_quadratic_rows_ir(derivation: Derivation) -> KernelIR:
    """Per-row outputs [a_00 … a_0(P−1), a_10 …, a_(d−1)(P−1), b_0 … b_(P−1), c₀] of a quadratic objective,
    followed by the coordinate weights [h_0 … h_(d−1)] when the model has them (domain "nonnegative"):
    A = mean Σ_i h_i a_i a_iᵀ is then formed on the host."""
    parts = _quadratic_parts(derivation)
    features = [a for row in parts.coeffs for a in row]
    weights = list(parts.weights or ())
    return build_forward_ir(
        [*features, *parts.b_terms, parts.c_term, *weights], derivation.params, derivation.data, mode="per_sample"
    )


def build_per_sample_grad_ir(integrand: sp.Expr, theta: Sequence[sp.Symbol], data: Sequence[sp.Symbol]) -> KernelIR:
    """IR writing ∂θ_k of the integrand for every row (outputs, one per θ_k).

    The variant of `build_value_and_grad_ir` for per-row results: nothing is summed, so every θ-only
    temporary of the prologue is chained back to θ inside the loop (its local derivatives are θ-only and
    end up hoisted), instead of having its adjoint accumulated and chained once after the loop.
    """
    prologue, body, (value,) = _prepare([integrand], set(data))
    adjoints = body.reverse(value, list(theta), through=list(prologue.ops))
    ir = KernelIR(tuple(theta), tuple(data))
    ir.outputs = [adjoints[p] for p in theta]
    return _finish(ir, prologue, body)


def build_hessian_ir(derivation: Derivation) -> KernelIR:
    """IR summing ∂²integrand/∂θ_k∂θ_l over rows for k ≤ l (row-major upper triangle, P(P+1)/2 sums).

    Forward over reverse on the tape: the per-row gradient is built by reverse accumulation (as for
    ``grad_rows``), then one forward sweep per θ_l carries tangents ∂/∂θ_l through every operation of
    the tape (each operation's local derivatives, `_local_derivatives`), giving column l of the Hessian.
    Code generation is linear in the size of the tape — no symbolic second derivatives of whole
    expressions, which sympy takes seconds to minutes to produce for models like ICA.
    """
    theta, x = derivation.params, derivation.data
    prologue, body, (value,) = _prepare([derivation.objective], set(x))
    adjoints = body.reverse(value, list(theta), through=list(prologue.ops))
    grads = [adjoints[p] for p in theta]
    tape = [*prologue.ops, *body.ops]  # in dependency order; the tangents are appended to `body` below
    columns = []
    for p in theta:
        tangent: dict[sp.Symbol, sp.Expr] = {p: sp.Integer(1)}
        for a in tape:
            parts = [local * tangent[arg] for arg, local in _local_derivatives(a.target, a.expr) if arg in tangent]
            if parts:
                tangent[a.target] = body.emit(sp.Add(*parts))
        columns.append(tangent)
    P = len(theta)
    entries = [columns[l].get(grads[k], sp.Integer(0)) for k in range(P) for l in range(k, P)]
    ir = KernelIR(tuple(theta), tuple(x))
    ir.sums = entries
    ir.sum_symbols = tuple(sp.Dummy(f"sum_{k}") for k in range(len(entries)))
    ir.results = list(ir.sum_symbols)
    return _finish(ir, prologue, body)
