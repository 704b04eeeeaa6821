"""The structured derivation: the score, Σᵢ∂ᵢ² log f and ∇θJ̃ of a model written with vectors and matrices,
exactly, as matrix-level operations on blocks of rows (``path="structured"``).

Forward Laplacian. Every node u of the tensor expression (symsm/model/tensor.py) that depends on the data
carries, per row, its value, its x-Jacobian and its Laplacian Σᵢ∂ᵢ²u:

* a vector u ∈ Rⁿ: Jacobian in factored form J_u = Σ_t diag(a_t(x)) M_t(θ), each M_t an n×d matrix of θ
  only (the identity for x itself) and each a_t an elementwise expression per row; the Laplacian a vector;
* a scalar s: a dense gradient ∇s ∈ Rᵈ per row (an expression of width d) and a scalar Laplacian.

For u = φ(y, z, …) elementwise: J_u = Σ diag(φ_y) J_y, lap_u = Σ φ_y lap_y + Σ φ_yz rowdot(J_y, J_z), where
rowdot(J_y, J_z) = Σ a_t ⊙ b_s ⊙ rowdot(M_t, N_s) and rowdot(M, N)ᵢ = Σⱼ MᵢⱼNᵢⱼ is θ-only (computed once
per call: ‖wₖ‖² for ICA). W @ u with u affine in x is a matrix product per block (X Wᵀ) whose Jacobian is
W·M (θ-only). sum(u) is a scalar with gradient Σ_t M_tᵀ a_t (a matrix product per block) and Laplacian
rowsum(lap_u). Scalars combine by the same rules with dense gradients (Student-t's log(1 + ‖x−μ‖²/ν)).
The per-row integrand is L = lap + ½‖∇ log f‖², the score is ∇ log f.

Other objectives (`derive_structured`'s ``objective``): sliced and sliced_vr carry forward tangents along the
per-row directions v (ẏ = Wv and ÿ = 0 for y = Wx, φ′ẏ and φ′ÿ + φ″ẏ² through φ: matrix products per block,
never a d × d Hessian); denoising runs the forward pass again at x + σε for the score there. Their auxiliary
inputs are columns of the block's rows after the d data columns (symsm/ir/blocks.py, "Auxiliary columns"). On
[0, ∞)ᵈ and boxes the exact objective is weighted, Σᵢ hᵢ∂ᵢ²ℓ + ½hᵢ(∂ᵢℓ)² + hᵢ′∂ᵢℓ with hᵢ = h(distᵢ(xᵢ)): it
needs the Hessian's diagonal as a row vector, carried like the Laplacian but per coordinate — a vector u keeps
∂ᵢ²uₖ = Σ cₖMₖᵢNₖᵢ as terms c ⊙ (M ⊙ N) of its Jacobian factors, and sum(u) turns each into the row product
c (M ⊙ N) with the θ-only M ⊙ N (for φ(Wx): φ″(y) (W ⊙ W)); the weights h, h′ are elementwise tables of x (fmin
and step for capped weights and a box's distance min(x − a, b − x), the bounds numbers or, where they differ
between coordinates, θ-level constant vectors). On the sphere (weight 1: `Exact.sphere_integrand`) a = zᵀ∇ℓ
and zᵀ(∇²ℓ)z are the tangents along v = z, the data itself.

Reverse mode over the resulting block program gives ∇θ of Σ_rows L: the adjoint of a matrix product per
block is two matrix products (Ā = S̄ P for S = A Pᵀ, and P̄ += S̄ᵀ A into a float64 accumulator); adjoints of
elementwise expressions are elementwise (sympy differentiates the scalar expressions, which are small:
they never depend on d); θ-vectors and scalars used per row accumulate column sums. The θ-only part
(rowdot(W, W), W·M, …) gets its adjoints once per call after the loop (symsm/ir/blocks.py writes that
epilogue). For ICA the block program is 5 matrix products per block, ≈ 10·d² flops per row.

Supported class: log f a scalar built from the data vector, parameters and constants by elementwise
+ − * / ** and the smooth functions, ``@`` (a parameter matrix times a vector affine in x, or vectors),
``.T`` and ``sum``, where every vector that depends on x enters through elementwise operations with
θ-vectors and θ-scalars and every scalar that depends on x combines only with scalars. Outside it (a
parameter matrix times a nonlinear function of x, an x-dependent scalar times an x-dependent vector) a
`ModelError` says which subexpression; the scalar paths ("sympy", "graph") take every model.

The result is a `StructuredDerivation`: θ-level nodes (`TNode`), row-level nodes (`RNode`: the data X,
matrix products and row sums per block), expressions over their placeholders (sympy Symbols named as the
block program's arrays), the outputs (score, L) and the accumulations of ∇θ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from ..core.errors import ModelError
from ..core.functions import BY_NAME, FUNCTIONS
from ..model.tensor import TensorExpr, _shape_text, _text

#: the functions an elementwise table calls (symsm/ir/blocks.py's TABLE_FUNCTIONS: derive sits below ir)
TABLE_FUNCTIONS = frozenset(f.name for f in FUNCTIONS if f.cls is not None and f.scalar is not None and f.smooth)

__all__ = [
    "STRUCTURED_OBJECTIVES",
    "RNode",
    "StructuredDerivation",
    "TNode",
    "derive_structured",
    "structured_objective_error",
]


def _function(name: str) -> Any:
    return BY_NAME[name].sympy


@dataclass(eq=False)
class TNode:
    """A θ-only array (computed once per call): a parameter or one operation on θ-only arrays.

    kinds: "param" (``leaf``), "const" (a constant vector: ``expr`` a sympy Tuple of its values), "gemm"
    (op(A) @ op(B), ``flags`` = (transpose A, transpose B); 1-D operands as numpy), "transpose", "rowdot"
    (Σⱼ MᵢⱼNᵢⱼ), "diag", "colsum" (Σᵢ Mᵢⱼ), "sum" (all entries), "scale_rows" (diag(c) M), "diagmat" (diag(c) as a
    matrix), "ewise" (``expr`` over the arguments' symbols, numpy broadcasting of scalars).
    """

    kind: str
    args: tuple[TNode, ...]
    shape: tuple[int, ...]
    name: str
    index: int
    symbol: sp.Symbol
    flags: tuple[bool, bool] = (False, False)
    expr: sp.Expr | None = None
    leaf: TensorExpr | None = None


@dataclass(eq=False)
class RNode:
    """An array per block of rows: "X" (the data, width d), "columns" (columns ``offset`` … ``offset`` + width − 1
    of the block's rows: the data x and the objective's auxiliary inputs when X has more columns than d),
    "matmul" (``input`` @ Pᵀ if ``transpose`` else ``input`` @ P, P a TNode) or "rowsum" (Σ over the row of
    ``input``, a row scalar: width 0)."""

    kind: str
    width: int
    name: str
    index: int
    symbol: sp.Symbol
    input: sp.Expr | None = None
    input_width: int = 0
    P: TNode | None = None
    transpose: bool = False
    offset: int = 0


@dataclass
class Accumulation:
    """Σ over rows into a θ-array's float64 adjoint: "outer" (acc += aᵀc: a, c of widths n, m), "colsum"
    (acc += Σ_rows a, width n) or "sum" (acc += Σ a over rows and entries)."""

    kind: str
    target: TNode
    a: sp.Expr
    a_width: int
    c: sp.Expr | None = None
    c_width: int = 0


@dataclass
class StructuredDerivation:
    """The structured derivation of one model (see the module docstring)."""

    dim: int
    columns: int = 0  # the width of the block's rows X: d, or d + the objective's auxiliary columns
    tnodes: list[TNode] = field(default_factory=list)
    rnodes: list[RNode] = field(default_factory=list)
    by_symbol: dict[sp.Symbol, TNode | RNode] = field(default_factory=dict)
    score: sp.Expr = sp.S.Zero  # width d
    integrand: sp.Expr = sp.S.Zero  # L, a row scalar
    accumulations: list[Accumulation] = field(default_factory=list)
    n_forward: int = 0  # rnodes[:n_forward] are the forward program (the rest compute adjoints)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def params(self) -> list[TNode]:
        return [t for t in self.tnodes if t.kind == "param"]

    # ------------------------------------------------------------------ θ-level nodes (hash-consed)
    def tnode(self, kind: str, args: tuple[TNode, ...], shape: tuple[int, ...], **kw: Any) -> TNode:
        key = ("t", kind, tuple(a.index for a in args), kw.get("flags"), kw.get("expr"), id(kw.get("leaf")))
        if key in self._memo:
            return self._memo[key]
        index = len(self.tnodes)
        leaf = kw.get("leaf")
        name = leaf.name if leaf is not None else f"t{index}"
        node = TNode(kind, args, shape, name, index, sp.Symbol(name, real=True), **kw)
        self.tnodes.append(node)
        self.by_symbol[node.symbol] = node
        self._memo[key] = node
        return node

    def rnode(self, kind: str, width: int, **kw: Any) -> RNode:
        p = kw.get("P")
        key = (
            "r", kind, width, kw.get("input"), kw.get("input_width"), p.index if p else None, kw.get("transpose"),
            kw.get("offset"),
        )  # fmt: skip
        if key in self._memo:
            return self._memo[key]
        index = len(self.rnodes)
        name = "X" if kind == "X" else f"r{index}"
        node = RNode(kind, width, name, index, sp.Symbol(name, real=True), **kw)
        self.rnodes.append(node)
        self.by_symbol[node.symbol] = node
        self._memo[key] = node
        return node

    def is_row(self, expr: sp.Expr) -> bool:
        """Whether `expr` depends on the row (holds a row-level placeholder)."""
        return any(isinstance(self.by_symbol.get(s), RNode) for s in expr.free_symbols)

    def matmul(self, expr: sp.Expr, width: int, P: TNode, transpose: bool) -> RNode:
        out = P.shape[0] if transpose else P.shape[1]
        return self.rnode("matmul", out, input=expr, input_width=width, P=P, transpose=transpose)

    def rowsum(self, expr: sp.Expr, width: int) -> sp.Expr:
        if width == 0:
            return expr
        if not self.is_row(expr) and not expr.free_symbols:
            return expr * width  # a constant per entry
        return self.rnode("rowsum", 0, input=expr, input_width=width).symbol


# ---------------------------------------------------------------------------------------------- forward values
IDENTITY = "I"  # the Jacobian of x itself (d × d)


@dataclass
class _Theta:
    """A θ-only value: an expression over θ-level placeholders (not yet an array) and its shape."""

    expr: sp.Expr
    shape: tuple[int, ...]


@dataclass
class _Vec:
    """A vector that depends on x: value (width n), Jacobian {M: a} meaning Σ diag(a) M, Laplacian."""

    value: sp.Expr
    width: int
    jac: dict[Any, tuple[Any, sp.Expr]]  # key → (M: TNode | IDENTITY, coefficient a)
    lap: sp.Expr
    tan: tuple[sp.Expr, ...] = ()  # per direction v: the forward tangent J v (width n)
    tan2: tuple[sp.Expr, ...] = ()  # per direction v: the second tangent (vᵀ∇²uₖv)ₖ (width n)
    #: the Hessian diagonals ∂ᵢ²uₖ = Σ cₖ MₖᵢNₖᵢ as {(M, N) key: (M, N, c)} (only where a weighted objective
    #: needs them): M, N θ-only Jacobian factors (or IDENTITY), c an elementwise coefficient of width n
    hd: dict[Any, tuple[Any, Any, sp.Expr]] = field(default_factory=dict)


@dataclass
class _Sca:
    """A scalar that depends on x: value, gradient (width d), Laplacian."""

    value: sp.Expr
    grad: sp.Expr
    lap: sp.Expr
    tan: tuple[sp.Expr, ...] = ()  # per direction v: vᵀ∇s
    tan2: tuple[sp.Expr, ...] = ()  # per direction v: vᵀ(∇²s)v
    hd: sp.Expr = sp.S.Zero  # the Hessian diagonal (∂ᵢ²s)ᵢ, width d (only where a weighted objective needs it)


DATA_KINDS = ("X", "columns")  # row nodes that read the block's rows (no adjoint)


class _Forward:
    def __init__(self, model: Any, columns: int = 0) -> None:
        self.model = model
        self.d = model.dim
        columns = columns or self.d
        self.g = StructuredDerivation(dim=self.d, columns=columns)
        self.X = self.g.rnode("X", columns)
        #: the data vector's value (x, or x + σε for denoising) and the directions of the forward tangents
        self.data: sp.Expr = self.X.symbol if columns == self.d else self.column_block(0, self.d)
        self.directions: tuple[sp.Expr, ...] = ()
        self.diagonal = False  # whether to carry Hessian diagonals (the weighted objective on [0, ∞)ᵈ)

    def column_block(self, offset: int, width: int) -> sp.Expr:
        """Columns offset … offset + width − 1 of the block's rows (the data x, or an auxiliary input)."""
        return self.g.rnode("columns", width, offset=offset).symbol

    # -- θ-level helpers
    def as_node(self, th: _Theta) -> TNode:
        """The θ array holding `th` (an "ewise" node unless it is already one array)."""
        node = self.g.by_symbol.get(th.expr) if isinstance(th.expr, sp.Symbol) else None
        if isinstance(node, TNode) and node.shape == th.shape:
            return node
        args = tuple(sorted((self.g.by_symbol[s] for s in th.expr.free_symbols), key=lambda t: t.index))
        return self.g.tnode("ewise", args, th.shape, expr=th.expr)  # type: ignore[arg-type]

    def as_symbol(self, th: _Theta) -> sp.Expr:
        """`th` for use inside a per-row expression: a number or one θ-array's placeholder."""
        if not th.expr.free_symbols:
            return th.expr
        return self.as_node(th).symbol

    def scaled(self, m: Any, coef: sp.Expr, n: int) -> Any:
        """diag(coef) M for a θ-only coefficient (scalar or n-vector), as a θ matrix (IDENTITY if it stays I)."""
        if coef == 1:
            return m
        c = self.as_node(_Theta(coef, () if self._scalar(coef) else (n,)))
        if c.shape == ():
            c = self._broadcast(c, n)
        if m == IDENTITY:
            return self.g.tnode("diagmat", (c,), (n, n))
        return self.g.tnode("scale_rows", (c, m), m.shape)

    def _broadcast(self, c: TNode, n: int) -> TNode:
        return self.g.tnode("ewise", (c,), (n,), expr=c.symbol)

    def _scalar(self, expr: sp.Expr) -> bool:
        return all(getattr(self.g.by_symbol[s], "shape", None) == () for s in expr.free_symbols)

    def matrix_sum(self, terms: list[Any], n: int) -> Any:
        """Σ of θ matrices (IDENTITY allowed when it is the only term)."""
        if len(terms) == 1:
            return terms[0]
        nodes = [self.g.tnode("diagmat", (self._broadcast(self.as_node(_Theta(sp.S.One, ())), n),), (n, n))
                 if t == IDENTITY else t for t in terms]  # fmt: skip
        expr = sp.Add(*[t.symbol for t in nodes])
        return self.as_node(_Theta(expr, nodes[0].shape))

    def rowdot(self, m: Any, n_: Any) -> sp.Expr:
        """rowdot(M, N) as an expression of width n (θ-only)."""
        if m == IDENTITY and n_ == IDENTITY:
            return sp.S.One
        if m == IDENTITY or n_ == IDENTITY:
            other = n_ if m == IDENTITY else m
            return self.g.tnode("diag", (other,), (other.shape[0],)).symbol
        a, b = sorted((m, n_), key=lambda t: t.index)
        return self.g.tnode("rowdot", (a, b), (a.shape[0],)).symbol

    def jac_dot(self, ju: dict[Any, tuple[Any, sp.Expr]], jv: dict[Any, tuple[Any, sp.Expr]]) -> sp.Expr:
        return sp.Add(*[a * b * self.rowdot(m, n) for m, a in ju.values() for n, b in jv.values()])

    # -- the pass
    def run(self, e: TensorExpr) -> Any:
        values: dict[int, Any] = {}
        for node in e.walk():
            values[id(node)] = self.visit(node, [values[id(a)] for a in node.args])
        return values[id(e)]

    def visit(self, node: TensorExpr, args: list[Any]) -> Any:
        op = node.op
        if op == "data":
            zero = (sp.S.Zero,) * len(self.directions)
            return _Vec(self.data, self.d, {IDENTITY: (IDENTITY, sp.S.One)}, sp.S.Zero, self.directions, zero)
        if op == "param":
            return _Theta(self.g.tnode("param", (), node.shape, leaf=node).symbol, node.shape)
        if op == "const":
            return _Theta(sp.sympify(node.value), ())
        if op == "add":
            return self.apply(node, lambda a, b: a + b, args)
        if op == "sub":
            return self.apply(node, lambda a, b: a - b, args)
        if op == "mul":
            return self.apply(node, lambda a, b: a * b, args)
        if op == "div":
            return self.apply(node, lambda a, b: a / b, args)
        if op == "pow":
            return self.apply(node, sp.Pow, args)
        if op == "neg":
            return self.apply(node, lambda a: -a, args)
        if op == "func":
            fn = _function(node.name)
            return self.apply(node, fn, args)
        if op == "transpose":
            (a,) = args
            if isinstance(a, _Theta) and len(a.shape) == 2:
                t = self.as_node(a)
                return _Theta(
                    self.g.tnode("transpose", (t,), (a.shape[1], a.shape[0])).symbol, (a.shape[1], a.shape[0])
                )
            return a
        if op == "sum":
            return self.total(node, args[0])
        if op == "matmul":
            return self.matmul(node, *args)
        raise ModelError(f"the structured derivation does not support the operation {op!r}")

    def unsupported(self, node: TensorExpr, why: str) -> ModelError:
        return ModelError(
            f"path='structured' does not support {_text(node)} (shape {_shape_text(node.shape)}): {why}; "
            "the scalar paths ('sympy', 'graph', 'auto') derive every model"
        )

    def apply(self, node: TensorExpr, fn: Any, args: list[Any]) -> Any:
        """An elementwise φ of the operands, by the chain rule on values, Jacobians and Laplacians."""
        if all(isinstance(a, _Theta) for a in args):
            shape = max((a.shape for a in args), key=len)
            return _Theta(fn(*[a.expr for a in args]), shape)
        xs = [a for a in args if not isinstance(a, _Theta)]
        kinds = {type(a) for a in xs}
        if len(kinds) > 1:
            raise self.unsupported(node, "it combines a data-dependent scalar with a data-dependent vector")
        zs = [sp.Dummy(f"z{k}", real=True) for k in range(len(args))]
        operands = []
        for z, a in zip(zs, args, strict=True):
            if isinstance(a, _Theta):
                if isinstance(xs[0], _Sca) and a.shape:
                    raise self.unsupported(node, "a data-dependent scalar is broadcast over a parameter vector")
                if len(a.shape) == 2:
                    raise self.unsupported(node, "a parameter matrix enters elementwise with the data")
                operands.append(self.as_symbol(a))
            else:
                operands.append(z)
        f = fn(*operands)
        xi = [k for k, a in enumerate(args) if not isinstance(a, _Theta)]
        sub = {zs[k]: args[k].value for k in xi}
        first = {k: f.diff(zs[k]) for k in xi}
        second = {(k, m): first[k].diff(zs[m]) for k in xi for m in xi if m >= k}
        value = f.xreplace(sub)
        d1 = {k: v.xreplace(sub) for k, v in first.items()}
        d2 = {km: v.xreplace(sub) for km, v in second.items()}
        tan, tan2 = self.tangents(args, xi, d1, d2)
        if isinstance(xs[0], _Vec):
            n = xs[0].width
            jac: dict[Any, tuple[Any, sp.Expr]] = {}
            lap = sp.S.Zero
            for k in xi:
                if d1[k] == 0:
                    continue
                for key, (m, a) in args[k].jac.items():
                    old = jac.get(key, (m, sp.S.Zero))[1]
                    jac[key] = (m, old + d1[k] * a)
                lap += d1[k] * args[k].lap
            for (k, m), v in d2.items():
                if v != 0:
                    lap += (1 if k == m else 2) * v * self.jac_dot(args[k].jac, args[m].jac)
            jac = {key: (m, _tanh_form(a)) for key, (m, a) in jac.items() if a != 0}
            hd = self.vector_diagonal(args, xi, d1, d2) if self.diagonal else {}
            return _Vec(value, n, jac, _tanh_form(lap), tan, tan2, hd)
        grad = sp.Add(*[d1[k] * args[k].grad for k in xi])
        lap = sp.Add(*[d1[k] * args[k].lap for k in xi])
        for (k, m), v in d2.items():
            if v != 0:
                dot = self.g.rowsum(args[k].grad * args[m].grad, self.d)
                lap += (1 if k == m else 2) * v * dot
        hd_s = sp.S.Zero
        if self.diagonal:
            hd_s = sp.Add(*[d1[k] * args[k].hd for k in xi])
            for (k, m), v in d2.items():
                if v != 0:
                    hd_s += (1 if k == m else 2) * v * args[k].grad * args[m].grad
        return _Sca(value, _tanh_form(grad), _tanh_form(lap), tan, tan2, _tanh_form(hd_s))

    def vector_diagonal(
        self, args: list[Any], xi: list[int], d1: dict[int, sp.Expr], d2: dict[tuple[int, int], sp.Expr]
    ) -> dict[Any, tuple[Any, Any, sp.Expr]]:
        """∂ᵢ²φ(y, z, …)ₖ = Σ φ_y ∂ᵢ²yₖ + Σ φ_yz ∂ᵢyₖ ∂ᵢzₖ with ∂ᵢyₖ = Σ a_t,ₖ M_t,ₖᵢ: terms c ⊙ (M ⊙ N) by (M, N)."""
        out: dict[Any, tuple[Any, Any, sp.Expr]] = {}

        def add(m: Any, n_: Any, coef: sp.Expr) -> None:
            if coef == 0:
                return
            if m != IDENTITY and (n_ == IDENTITY or n_.index < m.index):
                m, n_ = n_, m
            key = (m if m == IDENTITY else m.index, n_ if n_ == IDENTITY else n_.index)
            old = out.get(key, (m, n_, sp.S.Zero))[2]
            out[key] = (m, n_, old + coef)

        for k in xi:
            for m, n_, c in args[k].hd.values():
                add(m, n_, d1[k] * c)
        for (k, j), v in d2.items():
            if v == 0:
                continue
            mult = 1 if k == j else 2
            for m, a in args[k].jac.values():
                for n_, b in args[j].jac.values():
                    add(m, n_, mult * v * a * b)
        return {key: (m, n_, _tanh_form(c)) for key, (m, n_, c) in out.items()}

    def diagonal_sum(self, a: _Vec) -> sp.Expr:
        """(Σₖ ∂ᵢ²uₖ)ᵢ of a vector u: per term c ⊙ diag(N) where M is the identity, else the row product c (M ⊙ N)
        with the θ-only matrix M ⊙ N (computed once per call)."""
        out = sp.S.Zero
        for m, n_, c in a.hd.values():
            if m == IDENTITY and n_ == IDENTITY:
                out += c
            elif m == IDENTITY:
                out += c * self.g.tnode("diag", (n_,), (n_.shape[0],)).symbol
            else:
                h = self.as_node(_Theta(m.symbol * n_.symbol, m.shape))
                if self.g.is_row(c):
                    out += self.g.matmul(c, a.width, h, transpose=False).symbol
                else:
                    cn = self.as_node(_Theta(c, (a.width,)))
                    if cn.shape == ():
                        cn = self._broadcast(cn, a.width)
                    out += self.g.tnode("gemm", (h, cn), (self.d,), flags=(True, False)).symbol
        return out

    def tangents(
        self, args: list[Any], xi: list[int], d1: dict[int, sp.Expr], d2: dict[tuple[int, int], sp.Expr]
    ) -> tuple[tuple[sp.Expr, ...], tuple[sp.Expr, ...]]:
        """The forward tangents of φ(args) along each direction: φ′ẏ and φ′ÿ + φ″ẏ² (summed over the operands)."""
        tan, tan2 = [], []
        for j in range(len(self.directions)):
            t = sp.Add(*[d1[k] * args[k].tan[j] for k in xi])
            t2 = sp.Add(*[d1[k] * args[k].tan2[j] for k in xi])
            for (k, m), v in d2.items():
                if v != 0:
                    t2 += (1 if k == m else 2) * v * args[k].tan[j] * args[m].tan[j]
            tan.append(_tanh_form(t))
            tan2.append(_tanh_form(t2))
        return tuple(tan), tuple(tan2)

    def total(self, node: TensorExpr, a: Any) -> Any:
        if isinstance(a, _Theta):
            if not a.shape:
                return a
            return _Theta(self.g.tnode("sum", (self.as_node(a),), ()).symbol, ())
        if isinstance(a, _Sca):
            return a
        value = self.g.rowsum(a.value, a.width)
        grad = sp.S.Zero
        for m, coef in a.jac.values():
            if m == IDENTITY:
                grad += coef
            elif coef == 1:
                grad += self.g.tnode("colsum", (m,), (self.d,)).symbol
            elif not self.g.is_row(coef):
                c = self.as_node(_Theta(coef, (a.width,)))
                if c.shape == ():
                    c = self._broadcast(c, a.width)
                grad += self.g.tnode("gemm", (m, c), (self.d,), flags=(True, False)).symbol
            else:
                grad += self.g.matmul(coef, a.width, m, transpose=False).symbol
        lap = self.g.rowsum(a.lap, a.width) if a.lap != 0 else sp.S.Zero
        tan = tuple(self.g.rowsum(t, a.width) for t in a.tan)
        tan2 = tuple(self.g.rowsum(t, a.width) if t != 0 else sp.S.Zero for t in a.tan2)
        hd = self.diagonal_sum(a) if self.diagonal else sp.S.Zero
        return _Sca(value, grad, lap, tan, tan2, hd)

    def affine_jacobian(self, node: TensorExpr, u: _Vec) -> Any:
        """The θ-only Jacobian of a vector affine in x (a matrix, or IDENTITY), else a clear error."""
        if u.lap != 0 or any(self.g.is_row(a) for _, a in u.jac.values()):
            raise self.unsupported(
                node, "a parameter matrix multiplies a vector that is not affine in the data (apply the matrix first)"
            )
        return self.matrix_sum([self.scaled(m, a, u.width) for m, a in u.jac.values()], u.width)

    def matmul(self, node: TensorExpr, a: Any, b: Any) -> Any:
        if isinstance(a, _Theta) and isinstance(b, _Theta):
            shape = node.shape
            return _Theta(self.g.tnode("gemm", (self.as_node(a), self.as_node(b)), shape).symbol, shape)
        if (
            (isinstance(a, _Theta) and len(a.shape) == 1)
            or (isinstance(b, _Theta) and len(b.shape) == 1)
            or (not isinstance(a, _Theta) and not isinstance(b, _Theta))
        ):
            # u @ v of two vectors: sum(u * v)
            return self.total(node, self.apply(node, lambda p, q: p * q, [a, b]))
        if isinstance(a, _Theta):  # A (n, k) @ u (k)
            A = self.as_node(a)
            m = self.affine_jacobian(node, b)
            y = self.g.matmul(b.value, b.width, A, transpose=True)
            jac = A if m == IDENTITY else self.g.tnode("gemm", (A, m), (A.shape[0], self.d))
            tan = tuple(self.g.matmul(t, b.width, A, transpose=True).symbol for t in b.tan)
            zero = (sp.S.Zero,) * len(tan)  # b is affine in x: no second tangent
            return _Vec(y.symbol, y.width, {jac.index: (jac, sp.S.One)}, sp.S.Zero, tan, zero)
        A = self.as_node(b)
        m = self.affine_jacobian(node, a)
        y = self.g.matmul(a.value, a.width, A, transpose=False)
        if m == IDENTITY:
            jac = self.g.tnode("transpose", (A,), (A.shape[1], A.shape[0]))
        else:
            jac = self.g.tnode("gemm", (A, m), (A.shape[1], self.d), flags=(True, False))
        tan = tuple(self.g.matmul(t, a.width, A, transpose=False).symbol for t in a.tan)
        zero = (sp.S.Zero,) * len(tan)
        return _Vec(y.symbol, y.width, {jac.index: (jac, sp.S.One)}, sp.S.Zero, tan, zero)


# ---------------------------------------------------------------------------------------------- reverse mode
def _reverse(g: StructuredDerivation) -> None:
    """Adjoints of Σ_rows L for every θ-array used per row, as accumulations (and adjoint row nodes)."""
    g.n_forward = len(g.rnodes)
    adjoint: dict[int, list[sp.Expr]] = {}

    def propagate(expr: sp.Expr, width: int, bar: sp.Expr) -> None:
        for s in sorted(expr.free_symbols, key=str):
            node = g.by_symbol.get(s)
            if node is None:
                continue
            partial = bar * expr.diff(s)
            if partial == 0:
                continue
            if isinstance(node, RNode):
                if node.kind in DATA_KINDS:
                    continue
                if node.width == width:
                    adjoint.setdefault(node.index, []).append(partial)
                else:  # a row scalar broadcast along the row
                    adjoint.setdefault(node.index, []).append(g.rowsum(partial, width))
            elif node.kind == "const":
                continue  # a constant: no adjoint
            elif node.shape == ():
                g.accumulations.append(Accumulation("sum", node, partial, width))
            else:
                g.accumulations.append(Accumulation("colsum", node, partial, width))

    propagate(g.integrand, 0, sp.S.One)
    for node in reversed(g.rnodes[: g.n_forward]):
        terms = adjoint.pop(node.index, None)
        if not terms or node.kind in DATA_KINDS:
            continue
        bar = sp.Add(*terms)
        assert node.input is not None
        if node.kind == "rowsum":
            propagate(node.input, node.input_width, bar)
            continue
        P = node.P
        assert P is not None
        if node.transpose:  # out = A Pᵀ: P̄ += outᵀ A, Ā = out̄ P
            g.accumulations.append(Accumulation("outer", P, bar, node.width, node.input, node.input_width))
        else:  # out = A P: P̄ += Aᵀ out̄, Ā = out̄ Pᵀ
            g.accumulations.append(Accumulation("outer", P, node.input, node.input_width, bar, node.width))
        reads = [g.by_symbol.get(s) for s in node.input.free_symbols]
        if any(n is not None and not (isinstance(n, RNode) and n.kind in DATA_KINDS) for n in reads):
            a_bar = g.matmul(bar, node.width, P, transpose=not node.transpose)
            propagate(node.input, node.input_width, a_bar.symbol)


def _weighted(fwd: _Forward, model: Any, root: _Sca) -> sp.Expr:
    """Σᵢ hᵢ ∂ᵢ²ℓ + ½hᵢ(∂ᵢℓ)² + hᵢ′∂ᵢℓ with hᵢ = h(distᵢ(xᵢ)) and its derivative in xᵢ (`Exact`): elementwise
    tables of the data (and of the box's bounds as constant vectors where they differ between coordinates).
    Where a capped weight's min ties with both ends of an interval at once (measure zero) its derivative is
    sympy's of the flattened min (products of H(0) = ½); the scalar kernels' min, two arguments at a time, may
    give another value there."""
    from ..model.model import WEIGHT_VARIABLE

    h = model.weight_expr
    allowed = (sp.Min, sp.Max, sp.Heaviside)  # tables have fmin, fmax and step (min's and max's derivatives)
    hp = h.diff(WEIGHT_VARIABLE)
    for f in sp.preorder_traversal(h + hp):
        if isinstance(f, allowed) or not isinstance(f, (sp.Function, sp.Piecewise)):
            continue
        if _function_name(f) not in TABLE_FUNCTIONS:
            raise ModelError(
                f"path='structured' runs coordinate weights of smooth functions, min and max, not h(t) = {h} "
                f"({type(f).__name__}); use path 'sympy', 'graph' or 'auto'"
            )
    x = fwd.data
    u = sp.Dummy("u", real=True)
    distances = {model.box.distance(i, u) for i in range(fwd.d)}
    if len(distances) == 1 and None not in distances:  # one interval for every coordinate: constants in the table
        (dist,) = distances
        hu = h.xreplace({WEIGHT_VARIABLE: dist})
        hx = hu.xreplace({u: x})
        hpx = hu.diff(u).xreplace({u: x})
    else:  # per coordinate: min(x − a, b − x) with θ-level constant vectors a, b (±∞ for an open side)
        lower, upper = (np.asarray(v, dtype=float) for v in model.box.arrays())
        free = np.isinf(lower) & np.isinf(upper)  # weight 1: a finite stand-in interval, masked out
        lower[free], upper[free] = -1.0, 1.0
        a, b = (fwd.g.tnode("const", (), (fwd.d,), expr=sp.Tuple(*map(sp.Float, v))).symbol for v in (lower, upper))
        hu = h.xreplace({WEIGHT_VARIABLE: sp.Min(u - a, b - u)})
        hx, hpx = hu.xreplace({u: x}), hu.diff(u).xreplace({u: x})
        if free.any():
            mask = fwd.g.tnode("const", (), (fwd.d,), expr=sp.Tuple(*map(sp.Float, (~free).astype(float)))).symbol
            hx, hpx = mask * hx + (1 - mask), mask * hpx
    s = root.grad
    return fwd.g.rowsum(hx * (root.hd + s**2 / 2) + hpx * s, fwd.d)


def _function_name(f: Any) -> str | None:
    from ..core.functions import BY_CLASS

    record = BY_CLASS.get(type(f))
    return None if record is None else record.name


def _tanh_form(expr: Any) -> Any:
    """`expr` with sinh(u) = tanh(u)·cosh(u) for each u where that removes every cosh(u) (log cosh's derivatives:
    tanh u and tanh² u − 1 instead of sinh u / cosh u and sinh² u / cosh² u − 1: one function instead of two and
    no division); else `expr` unchanged."""
    if not isinstance(expr, sp.Basic):
        return expr
    for s in expr.atoms(sp.sinh):
        c = sp.cosh(s.args[0])
        if expr.has(c):
            rewritten = expr.subs(s, sp.tanh(s.args[0]) * c)
            if not rewritten.has(c):
                expr = rewritten
    return expr


#: the objectives the structured derivation builds (symsm/derive/objectives.py), by name
STRUCTURED_OBJECTIVES = ("exact", "sliced", "sliced_vr", "denoising")


def structured_objective_error(objective: Any) -> str | None:
    """Why the structured path cannot run `objective` (None: it can)."""
    name = getattr(objective, "name", "exact")
    if name not in STRUCTURED_OBJECTIVES:
        return (
            f"path='structured' runs the objectives {STRUCTURED_OBJECTIVES}, not {name!r}; "
            "use path 'sympy', 'graph' or 'auto'"
        )
    return None


def derive_structured(model: Any, objective: Any = None) -> StructuredDerivation:
    """The structured derivation of a model written with vectors and matrices (see the module docstring) for
    `objective` (symsm/derive/objectives.py; None: the exact one).

    The randomised objectives read their auxiliary inputs from the block's rows after the d data columns (the
    host appends them: `loss.draws`): sliced and sliced_vr M directions v (columns d + m·d + i), whose terms
    vᵀ∇log f and vᵀ(∇²log f)v are the first and second forward tangents along v (for y = Wx: ẏ = Wv, a matrix
    product per block; for φ(y): φ′ẏ and φ′ÿ + φ″ẏ²; never a d × d Hessian); denoising K noise draws ε (columns
    d + k·d + i), each a forward pass with the data node x + σε and the score there.
    """
    structure = getattr(model, "structure", None)
    if not isinstance(structure, TensorExpr):
        raise ModelError(
            "path='structured' needs a model written with vectors and matrices (symsm.data_vector, "
            "symsm.param_matrix, ...); this model is written with scalars — use path 'sympy', 'graph' or 'auto'"
        )
    why = structured_objective_error(objective)
    if why is not None:
        raise ModelError(why)
    name = getattr(objective, "name", "exact")
    d = model.dim
    n_aux = 0 if name == "exact" else objective.n_directions * d
    fwd = _Forward(model, d + n_aux)
    fwd.diagonal = name == "exact" and model.domain in ("nonnegative", "box")
    if model.domain not in ("real", "nonnegative", "box", "sphere"):
        raise ModelError(f"path='structured' does not run models on the domain {model.domain!r} yet")
    g = fwd.g
    if model.domain == "sphere":  # zᵀ∇ℓ and zᵀ(∇²ℓ)z: the tangents along v = z, the data itself
        fwd.directions = (fwd.data,)
    if name in ("sliced", "sliced_vr"):
        m_dirs = objective.n_directions
        fwd.directions = tuple(fwd.column_block(d * (1 + m), d) for m in range(m_dirs))
    root = fwd.run(structure)
    if not isinstance(root, _Sca):
        raise ModelError("log_f does not depend on the data; score matching needs a density in x")
    g.score = root.grad
    half_norm = g.rowsum(root.grad**2, d) / 2
    if name == "exact" and model.domain == "sphere":
        # Exact.sphere_integrand with h = 1: ½(‖∇ℓ‖² − a²) + Σᵢ∂ᵢ²ℓ − zᵀ(∇²ℓ)z − (m − 1)a, a = zᵀ∇ℓ
        (a,), (zhz,) = root.tan, root.tan2
        g.integrand = half_norm - a**2 / 2 + root.lap - zhz - (d - 1) * a
    elif name == "exact" and model.domain in ("nonnegative", "box"):
        g.integrand = _weighted(fwd, model, root)
    elif name == "exact":
        g.integrand = root.lap + half_norm
    elif name == "sliced":
        g.integrand = sp.Add(*[t2 + t**2 / 2 for t, t2 in zip(root.tan, root.tan2, strict=True)]) / m_dirs
    elif name == "sliced_vr":
        g.integrand = sp.Add(*root.tan2) / m_dirs + half_norm
    else:  # denoising: ½‖s(x + σε) + ε/σ‖², averaged over the K draws
        sigma = sp.Float(objective.noise_scale)
        x = fwd.data
        terms = []
        for k in range(objective.n_directions):
            eps = fwd.column_block(d * (1 + k), d)
            fwd.data = x + sigma * eps
            noisy = fwd.run(structure)
            terms.append(g.rowsum((noisy.grad + eps / sigma) ** 2, d))
        g.integrand = sp.Add(*terms) / (2 * objective.n_directions)
    _reverse(g)
    return g
