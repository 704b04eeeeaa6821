"""Kernel IR from the expression graph (symsm/derive/graph.py): the fast path from a model to its kernels.

Per-sample work is every graph node that depends on the data; nodes of θ alone form the prologue (once per
call); nodes that depend on the sums over samples form the epilogue. The θ-gradient is a reverse sweep from
the integrand that, per sample, stops at θ-only nodes — except linear ones (−W, a + b), whose adjoint passes
through at no cost — and accumulates their adjoints (equal adjoints share one sum: the graph is hash-consed);
after the loop a second sweep carries those sums through the θ-only nodes to θ (W² contributes 2W·Σ adj).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy as sp

from ..derive.derivation import ManifoldParts
from ..derive.graph import ExprGraph
from ..derive.stable import stable_log_f
from .ir import Assign, KernelIR, _inline_single_use, _reads
from .kernel_set import KernelSet, loss_kernels

if TYPE_CHECKING:
    from ..derive.objectives import Objective
    from ..model.manifold import Geometry
    from ..model.model import Model

__all__ = ["ModelGraph", "build_graph_kernels", "grad_rows_ir"]

INLINE_LIMIT = 3000  # sections longer than this are not folded for readability (it costs time, not speed)


class ModelGraph:
    """A model's log f, score, ∂ᵢ² log f, coordinate weights (`weight`, `weight_prime`: hᵢ, hᵢ′ on [0, ∞)ᵈ,
    None on Rᵈ) and an objective's integrand as nodes of one expression graph.

    Data leaves are the model's coordinates x (mask bits 0..d−1) followed by the objective's auxiliary
    per-row inputs (random directions, noise: `aux`), which the kernels read as extra data columns.
    """

    def __init__(self, model: Model, objective: Objective | None = None) -> None:
        from ..derive.objectives import Exact

        self.model = model
        self.objective = objective if objective is not None else Exact()
        self.aux_symbols = tuple(self.objective.aux_symbols(model))
        self.data_symbols = (*model.data, *self.aux_symbols)
        g = self.graph = ExprGraph(len(self.data_symbols))
        self.x = [g.leaf(x, "data", i) for i, x in enumerate(model.data)]
        self.aux = [g.leaf(a, "data", model.dim + j) for j, a in enumerate(self.aux_symbols)]
        self.x_mask = (1 << model.dim) - 1
        self.theta = [g.leaf(p, "theta") for p in model.params]
        # Terms of θ alone (a normalising constant such as log |det W|) have zero x-derivatives: they drop
        # out here, exactly as in the derivation, and may use functions the graph does not differentiate.
        # log-sum-exp and logs of products are rewritten exactly into forms that cannot overflow or underflow
        # (symsm/derive/stable.py).
        self.objective.check_model(model)
        self.weight: list[int] | None = None
        self.weight_prime: list[int] | None = None
        #: the sphere's (or sqrt-mapped simplex's) weight h(z) as a node, None when h = 1 or off the sphere
        self.manifold_weight: int | None = None
        geometry = getattr(model, "geometry", None)
        if geometry is not None:
            self._manifold(geometry)
            return
        data = set(model.data)
        log_f = stable_log_f(model.log_f)
        self.log_f = g.from_sympy(sp.Add(*[t for t in sp.Add.make_args(log_f) if t.free_symbols & data]))
        stopped = g.reverse({self.log_f: g.ONE}, relevant=lambda n: bool(g.mask[n] & self.x_mask))
        self.score = [stopped.get(x, g.ZERO) for x in self.x]
        self.hessian_diag = [g.tangent(s, i, {}) for i, s in enumerate(self.score)]
        # Domain "nonnegative": the coordinate weights hᵢ = h(xᵢ) and hᵢ′ (a forward tangent: exact), else None.
        weights = model.coordinate_weights()
        if weights is not None:
            self.weight = [g.from_sympy(h) for h in weights]
            self.weight_prime = [g.tangent(h, i, {}) for i, h in enumerate(self.weight)]
        self.integrand = self.objective.integrand(self)

    def _manifold(self, geometry: Geometry) -> None:
        """Sphere and simplex (symsm/model/manifold.py): log f, score, ∂ᵢ² and the integrand in the coordinates
        z of score matching — leaves of their own, column i for z_i — then z replaced by its expression in
        the data columns (√u, log(u_i/u_d); nothing on the sphere, where z is the data)."""
        g = self.graph
        z = [g.leaf(zi, "data", i) for i, zi in enumerate(geometry.coords)]
        data_x = self.x
        self.x = z
        self.log_f = g.from_sympy(geometry.log_f)
        z_mask = (1 << len(z)) - 1
        stopped = g.reverse({self.log_f: g.ONE}, relevant=lambda n: bool(g.mask[n] & z_mask))
        self.score = [stopped.get(zi, g.ZERO) for zi in z]
        self.hessian_diag = [g.tangent(s, i, {}) for i, s in enumerate(self.score)]
        parts = ManifoldParts.derive(geometry, self.model.params) if ManifoldParts.boundary_safe(geometry) else None
        if geometry.weight is not None and parts is None:
            self.manifold_weight = g.from_sympy(geometry.weight)
        self.integrand = g.ZERO if parts is not None else self.objective.integrand(self)
        if tuple(geometry.coords) != tuple(self.model.data):
            mapping = {zi: g.from_sympy(b) for zi, b in zip(z, geometry.back, strict=True)}
            memo: dict[int, int] = {}
            self.integrand = g.substitute(self.integrand, mapping, memo)
            self.score = [g.substitute(s, mapping, memo) for s in self.score]
            self.hessian_diag = [g.substitute(h, mapping, memo) for h in self.hessian_diag]
            self.log_f = g.substitute(self.log_f, mapping, memo)
        self.x = data_x
        if parts is not None:
            # zeros allowed (sqrt map under a boundary weight): the integrand in the compact form that is
            # finite at z_j = 0 (`ManifoldParts.boundary_integrand`), from sympy
            self.integrand = g.from_sympy(parts.in_data((parts.objective,))[0])

    def degree_in_data(self) -> float:
        """Polynomial degree of the integrand in x (inf when not a polynomial)."""
        return self.graph.degree(self.integrand, self.graph.data_mask)


def build_graph_kernels(model: Model, model_graph: ModelGraph | None = None) -> KernelSet:
    mg = model_graph or ModelGraph(model)
    return loss_kernels(
        value_and_grad=value_and_grad_ir(mg),
        value=forward_ir(mg, [mg.integrand], mode="sum"),
        per_sample=forward_ir(mg, [mg.integrand], mode="per_sample"),
        score=forward_ir(mg, mg.score, mode="per_sample"),
    )


def forward_ir(mg: ModelGraph, nodes: Sequence[int], *, mode: str) -> KernelIR:
    if mode == "per_sample":
        return _assemble(mg, sums=[], outputs=list(nodes), results=[])
    if mode != "sum":
        raise ValueError(f"mode must be 'sum' or 'per_sample', got {mode!r}")
    totals, results = _totals(mg, list(nodes))
    return _assemble(mg, sums=totals, outputs=[], results=results)


def value_and_grad_ir(mg: ModelGraph) -> KernelIR:
    g = mg.graph

    def linear(n: int) -> bool:
        op = g.op[n]
        return op == "add" or (op == "mul" and sum(g.op[a] != "const" for a in g.args[n]) == 1)

    def follow(n: int) -> bool:  # per sample: through data-dependent nodes and linear θ-only ones
        return bool(g.mask[n] & g.data_mask) or (g.mask[n] == 0 and linear(n))

    boundary = g.reverse({mg.integrand: g.ONE}, follow=follow, relevant=lambda n: g.theta_dep[n])
    order = sorted(boundary)
    totals, summed = _totals(mg, [mg.integrand, *(boundary[b] for b in order)])
    seeds = {b: s for b, s in zip(order, summed[1:], strict=True) if s != g.ZERO}
    after = g.reverse(seeds, relevant=lambda n: g.theta_dep[n]) if seeds else {}
    grads = [after.get(t, g.ZERO) for t in mg.theta]
    return _assemble(mg, sums=totals, outputs=[], results=[summed[0], *grads])


def grad_rows_ir(mg: ModelGraph) -> KernelIR:
    """∂θ_k of the integrand at every row (outputs, one per θ_k): one reverse sweep carried through every node
    to θ, per row (nothing is summed, so θ-only nodes are chained inside the loop; their local derivatives
    are θ-only and end up in the prologue)."""
    g = mg.graph
    adjoints = g.reverse({mg.integrand: g.ONE}, relevant=lambda n: g.theta_dep[n])
    return _assemble(mg, sums=[], outputs=[adjoints.get(t, g.ZERO) for t in mg.theta], results=[])


def _totals(mg: ModelGraph, per_sample: list[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """For each per-sample node: the node of its sum over samples (a leaf known after the loop, or N·node
    for θ-only nodes). Returns ([(per-sample node, total leaf)] for the accumulators, [total nodes])."""
    g = mg.graph
    n_leaf = g.leaf(_N_SAMPLES, "after")
    leaves: dict[int, int] = {}
    accumulators = []
    out = []
    for node in per_sample:
        if node == g.ZERO:
            out.append(g.ZERO)
            continue
        # Σ_t (v(t) + c) = Σ_t v(t) + N·c: only the data-dependent part is accumulated.
        terms = g.args[node] if g.op[node] == "add" else (node,)
        invariant = [t for t in terms if not g.mask[t] & g.data_mask]
        variant = [t for t in terms if g.mask[t] & g.data_mask]
        total = g.mul(n_leaf, g.add(*invariant)) if invariant else g.ZERO
        if variant:
            v = variant[0] if len(variant) == 1 else g.add(*variant)
            if v not in leaves:
                leaves[v] = g.leaf(sp.Dummy(f"sum_{len(leaves)}"), "after")
                accumulators.append((v, leaves[v]))
            total = g.add(total, leaves[v])
        out.append(total)
    return accumulators, out


_N_SAMPLES = sp.Dummy("n_samples")


def _assemble(mg: ModelGraph, *, sums: list[tuple[int, int]], outputs: list[int], results: list[int]) -> KernelIR:
    g = mg.graph
    model = mg.model
    ir = KernelIR(tuple(model.params), tuple(mg.data_symbols))
    ir.n_symbol = _N_SAMPLES
    per_sample_roots = [node for node, _ in sums] + outputs
    nodes = g.reachable([*per_sample_roots, *results], stop=lambda n: g.op[n] == "leaf")
    symbol_of: dict[int, sp.Basic] = {}
    sections: dict[str, list[int]] = {"prologue": [], "body": [], "epilogue": []}
    for n in nodes:
        if g.op[n] == "leaf":
            continue
        mask = g.mask[n]
        section = "body" if mask & g.data_mask else ("epilogue" if mask & g.after_bit else "prologue")
        sections[section].append(n)
    prefixes = {"prologue": "c", "body": "t", "epilogue": "e"}
    for name, ids in sections.items():
        for k, n in enumerate(ids):
            symbol_of[n] = sp.Dummy(f"{prefixes[name]}{k}")

    def expr(n: int) -> sp.Expr:
        if n in symbol_of:
            return symbol_of[n]
        return g.to_sympy(n, symbol_of)  # a leaf or a constant

    assigns = {name: [Assign(symbol_of[n], g.to_sympy(n, symbol_of)) for n in ids] for name, ids in sections.items()}
    ir.sums = [expr(node) for node, _ in sums]
    ir.sum_symbols = tuple(g.payload[leaf][1] for _, leaf in sums)
    ir.outputs = [expr(n) for n in outputs]
    ir.results = [expr(n) for n in results]
    after_loop = _reads(assigns["epilogue"], ir.results)
    read_by_loop = _reads([], ir.sums, ir.outputs)
    ir.epilogue = _readable(assigns["epilogue"], set(ir.results) | set())
    ir.body = _readable(assigns["body"], read_by_loop)
    reads = _reads([*ir.body, *ir.epilogue], ir.sums, ir.outputs, ir.results) | after_loop
    ir.prologue = _readable(assigns["prologue"], reads)
    return ir


def _readable(assigns: list[Assign], keep: set[sp.Basic]) -> list[Assign]:
    """Fold single-use temporaries into their user (readable generated code), for sections of modest size."""
    if len(assigns) > INLINE_LIMIT:
        return assigns
    return _inline_single_use(assigns, keep={s for s in keep if isinstance(s, sp.Symbol)})
