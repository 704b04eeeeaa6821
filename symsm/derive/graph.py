"""Expression graphs and exact automatic differentiation on them — the derivation behind the kernels.

sympy differentiates trees: ∂ᵢ of a d-term log-density walks every term for every i, and each operation
recomputes free symbols and re-canonicalises, so ICA with d = 32 took 11 s to differentiate and 40 s more to
turn into kernels. Here log f becomes a hash-consed DAG of scalar operations (every distinct subexpression
is one node: common-subexpression elimination is free), and the derivatives are built on the DAG:

* the score s = ∇ₓ log f by one reverse sweep;
* each ∂ᵢ² log f = ∂s_i/∂x_i by a forward tangent along x_i, visiting only nodes that depend on x_i
  (bitmask per node), so the Hessian diagonal of ICA costs O(d²), not O(d³);
* the θ-gradient of the per-sample integrand by a reverse sweep (see `reverse`, which can stop at chosen
  nodes so θ-only parts are differentiated once per call, after the sum over samples).

The results are exact expressions (the same mathematics as sympy's `diff`, in a different form); tests
check them against sympy and against independent numpy references. Construction applies a few exact
rewrites: flattening and constant folding, collecting like terms and like powers, sinh(u)·cosh(u)⁻¹ → tanh(u),
and grouping a sum's terms by their data-dependent factor (Σ_j c_j·v → (Σ_j c_j)·v with θ-only c_j).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import sympy as sp

from ..core.errors import CodegenError
from ..core.functions import BY_CLASS, BY_NAME, X2, X, Y

__all__ = ["ExprGraph", "Number"]

Number = Fraction | float


def _number(value: Any) -> Number:
    if isinstance(value, (Fraction, float)):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, sp.Rational):
        return Fraction(int(value.p), int(value.q))
    return float(value)


class ExprGraph:
    """A DAG of scalar operations. Node ids are topologically ordered (arguments before users).

    Ops: "const" (payload: Fraction or float), "leaf" (payload: (kind, sympy Symbol)), "add", "mul"
    (n-ary, canonically ordered arguments), "pow" (payload: numeric exponent), "powv" (base, exponent
    nodes), "fn" (payload: function name; one argument, or two for min and max: n-ary ones are nested).
    """

    def __init__(self, n_data: int = 0) -> None:
        self.op: list[str] = []
        self.args: list[tuple[int, ...]] = []
        self.payload: list[Any] = []
        # bit i (i < n_data): depends on data leaf i; bit n_data: depends on a per-call "after the loop"
        # leaf (sums over samples, the sample count). mask == 0: a function of θ alone.
        self.mask: list[int] = []
        self.theta_dep: list[bool] = []
        self.data_mask = (1 << n_data) - 1
        self.after_bit = 1 << n_data
        self._key: dict[tuple, int] = {}
        self.leaves: dict[sp.Symbol, int] = {}
        self.ZERO = self.const(0)
        self.ONE = self.const(1)

    # ------------------------------------------------------------------ construction
    def _node(self, op: str, args: tuple[int, ...], payload: Any, mask: int) -> int:
        key = (op, args, payload)
        found = self._key.get(key)
        if found is not None:
            return found
        nid = len(self.op)
        self.op.append(op)
        self.args.append(args)
        self.payload.append(payload)
        self.mask.append(mask)
        self.theta_dep.append((op == "leaf" and payload[0] == "theta") or any(self.theta_dep[a] for a in args))
        self._key[key] = nid
        return nid

    def const(self, value: Any) -> int:
        v = _number(value)
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            v = Fraction(int(v))
        return self._node("const", (), v, 0)

    def leaf(self, symbol: sp.Symbol, kind: str, bit: int = 0) -> int:
        """A leaf: kind "data" (mask bit `bit`), "theta", or "after" (known after the loop over samples)."""
        mask = (1 << bit) if kind == "data" else (self.after_bit if kind == "after" else 0)
        nid = self._node("leaf", (), (kind, symbol), mask)
        self.leaves[symbol] = nid
        return nid

    def is_const(self, n: int) -> bool:
        return self.op[n] == "const"

    def value(self, n: int) -> Number:
        return self.payload[n]

    def add(self, *terms: int) -> int:
        """Σ terms, flattened; like terms collected; terms with the same data-dependent factor grouped."""
        constant: Number = Fraction(0)
        coeffs: dict[int, list[int]] = {}  # rest → coefficient nodes
        order: list[int] = []
        stack = list(terms)
        while stack:
            t = stack.pop()
            if self.op[t] == "add":
                stack.extend(self.args[t])
                continue
            if self.op[t] == "const":
                constant = constant + self.payload[t]
                continue
            if self.op[t] == "mul" and len(self.args[t]) == 2:
                c, other = self.args[t]
                if self.op[c] != "const":
                    c, other = other, c
                if self.op[c] == "const" and self.op[other] == "add":
                    # c·(a + b) → c·a + c·b (numeric c, as sympy does), so like terms meet
                    stack.extend(self.mul(c, u) for u in self.args[other])
                    continue
            coeff, rest = self._split_coefficient(t)
            if rest not in coeffs:
                coeffs[rest] = []
                order.append(rest)
            coeffs[rest].append(coeff)
        parts = []
        for rest in order:
            cs = coeffs[rest]
            c = cs[0] if len(cs) == 1 else self._add_invariant(cs)
            if self.op[c] == "const" and self.payload[c] == 0:
                continue
            parts.append(rest if c == self.ONE else self.mul(c, rest))
        if constant != 0 or not parts:
            parts.append(self.const(constant))
        return self._combine("add", parts)

    def _combine(self, op: str, parts: list[int]) -> int:
        """`parts` as one `op` node ("add" or "mul"; sorted, the canonical order hash-consing relies on), or the
        single part itself."""
        if len(parts) == 1:
            return parts[0]
        parts.sort()
        mask = 0
        for p in parts:
            mask |= self.mask[p]
        return self._node(op, tuple(parts), None, mask)

    def _add_invariant(self, coeffs: list[int]) -> int:
        """Sum of coefficient nodes (numbers or θ-only): flattened, constants folded, like terms collected."""
        constant: Number = Fraction(0)
        scale: dict[int, Number] = {}
        order: list[int] = []
        stack = list(coeffs)
        while stack:
            t = stack.pop()
            op = self.op[t]
            if op == "add":
                stack.extend(self.args[t])
                continue
            if op == "const":
                constant = constant + self.payload[t]
                continue
            c: Number = Fraction(1)
            rest = t
            consts = [a for a in self.args[t] if self.op[a] == "const"] if op == "mul" else []
            if consts:
                c = self.payload[consts[0]]
                others = tuple(a for a in self.args[t] if a != consts[0])
                rest = others[0] if len(others) == 1 else self._node("mul", others, None, self.mask[t])
            if rest not in scale:
                scale[rest] = Fraction(0)
                order.append(rest)
            scale[rest] = scale[rest] + c
        parts = [r if scale[r] == 1 else self.mul(self.const(scale[r]), r) for r in order if scale[r] != 0]
        if constant != 0 or not parts:
            parts.append(self.const(constant))
        return self._combine("add", parts)

    def _split_coefficient(self, t: int) -> tuple[int, int]:
        """t = coeff · rest, coeff the product of t's factors that do not depend on the data."""
        if self.mask[t] == 0:
            return t, self.ONE
        if self.op[t] != "mul":
            return self.ONE, t
        inv = [a for a in self.args[t] if self.mask[a] == 0]
        if not inv:
            return self.ONE, t
        var = [a for a in self.args[t] if self.mask[a] != 0]
        return self.mul(*inv), (var[0] if len(var) == 1 else self._node("mul", tuple(sorted(var)), None, self.mask[t]))

    def mul(self, *factors: int, keep: int | None = None) -> int:
        """Π factors, flattened; constants folded; powers of a base combined; sinh·cosh⁻¹ → tanh.

        A factor equal to `keep` is not flattened: an adjoint used by many products stays one shared node.
        """
        coeff: Number = Fraction(1)
        powers: dict[int, Number] = {}
        order: list[int] = []
        stack = list(factors)
        while stack:
            f = stack.pop()
            op = self.op[f]
            if op == "mul" and f != keep:
                stack.extend(self.args[f])
                continue
            if op == "const":
                coeff = coeff * self.payload[f]
                continue
            base, exp = (self.args[f][0], self.payload[f]) if op == "pow" else (f, Fraction(1))
            if base not in powers:
                powers[base] = Fraction(0)
                order.append(base)
            powers[base] = powers[base] + exp
        if coeff == 0:
            return self.ZERO
        self._hyperbolic(powers, order)
        parts = []
        for base in order:
            e = powers[base]
            if e != 0:
                parts.append(self.pow(base, e))
        if coeff != 1 or not parts:
            parts.append(self.const(coeff))
        return self._combine("mul", parts)

    def _hyperbolic(self, powers: dict[int, Number], order: list[int]) -> None:
        """sinh(u)^a · cosh(u)^(−b) → tanh(u)^min(a,b) · ... (exact; derivatives of log cosh stay short)."""
        for base in list(order):
            if self.op[base] == "fn" and self.payload[base] == "sinh" and powers.get(base, 0) > 0:
                u = self.args[base][0]
                cosh = self._key.get(("fn", (u,), "cosh"))
                if cosh is not None and powers.get(cosh, 0) < 0:
                    k = min(powers[base], -powers[cosh])
                    if isinstance(k, Fraction) and k.denominator == 1:
                        powers[base] -= k
                        powers[cosh] += k
                        tanh = self.fn("tanh", u)
                        if tanh not in powers:
                            powers[tanh] = Fraction(0)
                            order.append(tanh)
                        powers[tanh] += k

    def pow(self, base: int, exponent: Any) -> int:
        e = _number(exponent)
        if e == 0:
            return self.ONE
        if e == 1:
            return base
        if self.op[base] == "const":
            b = self.payload[base]
            if isinstance(b, Fraction) and isinstance(e, Fraction) and e.denominator == 1:
                if b == 0 and e < 0:
                    raise CodegenError("division by zero in the model")
                return self.const(b**e)
            return self.const(float(b) ** float(e))
        if self.op[base] == "pow" and isinstance(e, Fraction) and e.denominator == 1:
            return self.pow(self.args[base][0], self.payload[base] * e)
        if self.op[base] == "mul" and isinstance(e, Fraction) and e.denominator == 1:
            return self.mul(*[self.pow(a, e) for a in self.args[base]])
        return self._node("pow", (base,), e, self.mask[base])

    def powv(self, base: int, exponent: int) -> int:
        if self.op[exponent] == "const":
            return self.pow(base, self.payload[exponent])
        return self._node("powv", (base, exponent), None, self.mask[base] | self.mask[exponent])

    def fn(self, name: str, *args: int) -> int:
        if len(args) == 2:  # min, max
            first, second = args
            if first == second:
                return first
            if self.op[first] == "const" and self.op[second] == "const":
                return self.const((min if name == "min" else max)(self.payload[first], self.payload[second]))
            first, second = sorted(args)  # min and max are symmetric: one node for both orders
            return self._node("fn", (first, second), name, self.mask[first] | self.mask[second])
        (arg,) = args
        if self.op[arg] == "const":
            folded = self._fold(name, self.payload[arg])
            if folded is not None:
                return folded
        return self._node("fn", (arg,), name, self.mask[arg])

    def _fold(self, name: str, value: Number) -> int | None:
        """f(constant) as a constant (exact where the float result is an integer: sin(0) → 0, exp(0) → 1)."""
        if name == "heaviside":  # H(0) = ½, as in the function table's rules
            return self.const(Fraction(1) if value > 0 else Fraction(0) if value < 0 else Fraction(1, 2))
        scalar = BY_NAME[name].scalar
        if scalar is None:
            return None
        try:
            return self.const(float(getattr(math, scalar)(float(value))))
        except (ValueError, OverflowError, TypeError):
            return None

    def neg(self, a: int) -> int:
        return self.mul(self.const(-1), a)

    def sub(self, a: int, b: int) -> int:
        return self.add(a, self.neg(b))

    def div(self, a: int, b: int) -> int:
        return self.mul(a, self.pow(b, -1))

    # ------------------------------------------------------------------ sympy conversion
    def from_sympy(self, expr: sp.Expr) -> int:
        """The node of a sympy expression whose symbols are leaves of this graph."""
        memo: dict[sp.Basic, int] = {}

        def visit(e: sp.Basic) -> int:
            if e in memo:
                return memo[e]
            if isinstance(e, sp.Symbol):
                if e not in self.leaves:
                    raise CodegenError(f"symbol {e} is not a leaf of the graph")
                out = self.leaves[e]
            elif e.is_Number or isinstance(e, sp.NumberSymbol):
                out = self.const(e)
            elif isinstance(e, sp.Add):
                out = self.add(*[visit(a) for a in e.args])
            elif isinstance(e, sp.Mul):
                out = self.mul(*[visit(a) for a in e.args])
            elif isinstance(e, sp.Pow):
                out = self.powv(visit(e.base), visit(e.exp))
            elif isinstance(e, sp.Function) and type(e) in BY_CLASS and len(e.args) == 1:
                out = self.fn(BY_CLASS[type(e)].name, visit(e.args[0]))
            elif isinstance(e, (sp.Min, sp.Max)):  # n-ary: nested, two arguments at a time
                name = BY_CLASS[type(e)].name
                out = visit(e.args[0])
                for a in e.args[1:]:
                    out = self.fn(name, out, visit(a))
            elif isinstance(e, sp.Heaviside) and e.args[1:] in ((), (sp.S.Half,)):
                out = self.fn("heaviside", visit(e.args[0]))
            else:
                raise CodegenError(f"cannot differentiate {type(e).__name__}: {e}")
            memo[e] = out
            return out

        return visit(expr)

    def to_sympy(self, n: int, symbol_of: dict[int, sp.Basic]) -> sp.Expr:
        """Node n as a sympy expression of one operation over `symbol_of` (node id → symbol) or numbers."""

        def arg(a: int) -> sp.Basic:
            if a in symbol_of:
                return symbol_of[a]
            if self.op[a] == "const":
                return _sympy_number(self.payload[a])
            if self.op[a] == "leaf":
                return self.payload[a][1]
            raise CodegenError(f"node {a} ({self.op[a]}) has no symbol")

        op = self.op[n]
        if op == "const":
            return _sympy_number(self.payload[n])
        if op == "leaf":
            return self.payload[n][1]
        args = [arg(a) for a in self.args[n]]
        if op == "add":
            return sp.Add(*args)
        if op == "mul":
            return sp.Mul(*args)
        if op == "pow":
            return sp.Pow(args[0], _sympy_number(self.payload[n]))
        if op == "powv":
            return sp.Pow(args[0], args[1])
        if op == "fn":
            return BY_NAME[self.payload[n]].sympy(*args)
        raise CodegenError(f"unknown node {op}")

    def expression(self, n: int) -> sp.Expr:
        """The whole subgraph under node n as one sympy expression (for tests and display)."""
        memo: dict[int, sp.Expr] = {}
        for m in self.reachable([n]):
            memo[m] = self.to_sympy(m, memo)
        return memo[n] if n in memo else self.to_sympy(n, memo)

    # ------------------------------------------------------------------ differentiation
    def local_derivatives(self, n: int) -> list[tuple[int, int]]:
        """(argument, ∂n/∂argument) for each argument of node n (new nodes as needed)."""
        op, args = self.op[n], self.args[n]
        if op == "add":
            return [(a, self.ONE) for a in args]
        if op == "mul":
            if len(args) == 2:
                return [(args[0], args[1]), (args[1], args[0])]
            return [(a, self.mul(*(args[:k] + args[k + 1 :]))) for k, a in enumerate(args)]
        if op == "pow":
            a, e = args[0], self.payload[n]
            if isinstance(e, Fraction) and e.denominator == 1:
                return [(a, self.mul(self.const(e), self.pow(a, e - 1)))]
            return [(a, self.mul(self.const(e), n, self.pow(a, -1)))]  # e·a^e/a: reuses the root
        if op == "powv":
            a, b = args
            return [(a, self.mul(b, n, self.pow(a, -1))), (b, self.mul(n, self.fn("log", a)))]
        if op == "fn":
            if len(args) == 2:  # min, max: one rule per argument
                rules = _rule(self.payload[n])
                return [(a, self._build(r, args, n)) for a, r in zip(args, rules, strict=True)]
            return [(args[0], self._function_derivative(self.payload[n], args[0], n))]
        return []

    def _function_derivative(self, name: str, a: int, n: int) -> int:
        """d n/d a for n = name(a), by the function table's rule (X → a, Y → n)."""
        return self._build(_rule(name), (a,), n)

    def _build(self, rule: tuple, a: tuple[int, ...], n: int) -> int:
        op = rule[0]
        if op == "X":
            return a[0]
        if op == "X2":
            return a[1]
        if op == "Y":
            return n
        if op == "const":
            return self.const(rule[1])
        if op == "add":
            return self.add(*[self._build(r, a, n) for r in rule[1]])
        if op == "mul":
            return self.mul(*[self._build(r, a, n) for r in rule[1]])
        if op == "pow":
            return self.pow(self._build(rule[1], a, n), rule[2])
        return self.fn(rule[1], self._build(rule[2], a, n))  # "fn"

    def reverse(
        self,
        seeds: dict[int, int],
        *,
        follow: Any = None,
        relevant: Any = None,
    ) -> dict[int, int]:
        """Adjoints by one reverse sweep from `seeds` (node → its adjoint node).

        Returns the adjoint of every node the sweep reached but did not propagate through: leaves and the
        nodes for which `follow(node)` is False. `relevant(arg)` (default: always) prunes arguments whose
        adjoints are not wanted (e.g. those that do not depend on the variables of differentiation).
        """
        import heapq

        contributions: dict[int, list[int]] = {n: [a] for n, a in seeds.items()}
        heap = [-n for n in seeds]
        heapq.heapify(heap)
        stopped: dict[int, int] = {}
        while heap:  # decreasing ids: every user of a node is done before the node
            n = -heapq.heappop(heap)
            parts = contributions.pop(n)
            bar = parts[0] if len(parts) == 1 else self.add(*parts)
            if self.op[n] == "leaf" or (follow is not None and not follow(n)):
                stopped[n] = bar
                continue
            # An adjoint that is a sum or a product of several nodes is shared by all its uses (not
            # flattened into each product); a scaled single node is flattened so like terms still combine.
            op_bar = self.op[bar]
            shared = (
                bar
                if op_bar == "add" or (op_bar == "mul" and sum(self.op[a] != "const" for a in self.args[bar]) > 1)
                else None
            )
            for a, local in self.local_derivatives(n):
                if self.op[a] == "const" or (relevant is not None and not relevant(a)):
                    continue
                c = self.mul(bar, local, keep=shared)
                if c == self.ZERO:
                    continue
                if a not in contributions:
                    contributions[a] = []
                    heapq.heappush(heap, -a)
                contributions[a].append(c)
        return stopped

    def tangent(self, n: int, bit: int, memo: dict[int, int]) -> int:
        """d n / d(data leaf with mask bit `bit`), forward mode; visits only nodes depending on it."""
        flag = 1 << bit
        if not self.mask[n] & flag:
            return self.ZERO
        found = memo.get(n)
        if found is not None:
            return found
        op = self.op[n]
        if op == "leaf":
            out = self.ONE
        elif op == "add":
            out = self.add(*[self.tangent(a, bit, memo) for a in self.args[n] if self.mask[a] & flag])
        else:
            terms = []
            for a, local in self.local_derivatives_lazy(n, flag):
                ta = self.tangent(a, bit, memo)
                if ta != self.ZERO:
                    terms.append(self.mul(local(), ta))
            out = self.add(*terms) if terms else self.ZERO
        memo[n] = out
        return out

    def directional(self, n: int, seeds: dict[int, int], memo: dict[int, int]) -> int:
        """d n(x + t·v) / dt at t = 0, forward mode: data leaf L moves with tangent node `seeds[L]`.

        `tangent` with several leaves seeded at once, each by a node (a direction v_j, itself a data leaf
        that does not move): for log f it gives the directional derivative vᵀ∇ log f, applied to that
        vᵀHv — a Hessian-vector product without the d × d Hessian. Visits only nodes that depend on a
        seeded leaf; `memo` is per seed set.
        """
        flag = 0
        for leaf in seeds:
            flag |= self.mask[leaf]
        return self._directional(n, seeds, flag, memo)

    def _directional(self, n: int, seeds: dict[int, int], flag: int, memo: dict[int, int]) -> int:
        if not self.mask[n] & flag:
            return self.ZERO
        found = memo.get(n)
        if found is not None:
            return found
        op = self.op[n]
        if op == "leaf":
            out = seeds.get(n, self.ZERO)
        elif op == "add":
            out = self.add(*[self._directional(a, seeds, flag, memo) for a in self.args[n] if self.mask[a] & flag])
        else:
            terms = []
            for a, local in self.local_derivatives_lazy(n, flag):
                ta = self._directional(a, seeds, flag, memo)
                if ta != self.ZERO:
                    terms.append(self.mul(local(), ta))
            out = self.add(*terms) if terms else self.ZERO
        memo[n] = out
        return out

    def substitute(self, n: int, mapping: dict[int, int], memo: dict[int, int]) -> int:
        """Node n with the data leaves in `mapping` replaced by the given nodes (e.g. x → x + σε).

        Only nodes that depend on a replaced leaf are rebuilt, through the same constructors (so the
        rewrites of construction apply to the new nodes too); `memo` is per mapping.
        """
        flag = 0
        for leaf in mapping:
            flag |= self.mask[leaf]
        order = [m for m in self.reachable([n]) if self.mask[m] & flag and m not in memo]
        for m in order:  # ascending ids: arguments before their users
            op, args = self.op[m], self.args[m]
            if op == "leaf":
                memo[m] = mapping.get(m, m)
                continue
            new = [memo.get(a, a) for a in args]
            if op == "add":
                memo[m] = self.add(*new)
            elif op == "mul":
                memo[m] = self.mul(*new)
            elif op == "pow":
                memo[m] = self.pow(new[0], self.payload[m])
            elif op == "powv":
                memo[m] = self.powv(new[0], new[1])
            elif op == "fn":
                memo[m] = self.fn(self.payload[m], *new)
            else:
                raise CodegenError(f"cannot substitute into node {op}")
        return memo.get(n, n)

    def local_derivatives_lazy(self, n: int, flag: int) -> list[tuple[int, Any]]:
        """Like local_derivatives, restricted to arguments with mask `flag`, each derivative built on demand."""
        args = self.args[n]
        picks = [k for k, a in enumerate(args) if self.mask[a] & flag]
        if self.op[n] == "mul":
            return [(args[k], lambda k=k: self.mul(*(args[:k] + args[k + 1 :]))) for k in picks]
        full = dict(self.local_derivatives(n))
        return [(args[k], lambda k=k: full[args[k]]) for k in picks]

    # ------------------------------------------------------------------ analysis
    def degree(self, n: int, flag_mask: int, memo: dict[int, float] | None = None) -> float:
        """Polynomial degree of node n in the data leaves selected by `flag_mask` (inf if not polynomial)."""
        memo = {} if memo is None else memo
        stack = [n]
        order = []
        while stack:
            m = stack.pop()
            if m in memo:
                continue
            memo[m] = -1.0  # visiting
            order.append(m)
            stack.extend(a for a in self.args[m] if a not in memo)
        for m in sorted(order):
            op = self.op[m]
            if not self.mask[m] & flag_mask:
                d = 0.0
            elif op == "leaf":
                d = 1.0
            elif op == "add":
                d = max(memo[a] for a in self.args[m])
            elif op == "mul":
                d = sum(memo[a] for a in self.args[m])
            elif (
                op == "pow"
                and isinstance(self.payload[m], Fraction)
                and self.payload[m].denominator == 1
                and (self.payload[m] > 0)
            ):
                d = memo[self.args[m][0]] * int(self.payload[m])
            else:
                d = math.inf
            memo[m] = d
        return memo[n]

    def reachable(self, roots: Sequence[int], stop: Any = None) -> list[int]:
        """Ids of the non-constant nodes the roots depend on (ascending), not looking inside `stop(n)`."""
        seen: set[int] = set()
        stack = [r for r in roots]
        while stack:
            m = stack.pop()
            if m in seen or self.op[m] == "const":
                continue
            seen.add(m)
            if stop is not None and stop(m):
                continue
            stack.extend(self.args[m])
        return sorted(seen)


@functools.cache
def _rule(name: str) -> Any:
    """The derivative rule of `name` (symsm/core/functions.py) as a tree of graph operations, converted once:
    ("X",) | ("X2",) | ("Y",) | ("const", number) | ("add" | "mul", (rules...)) | ("pow", rule, exponent) |
    ("fn", name, rule); a tuple of two such trees for a two-argument function (min, max).
    Each numeric coefficient is one constant (2/√π one float, as a hand-written rule would have it)."""
    function = BY_NAME.get(name)
    if function is None or function.derivative is None:
        raise CodegenError(f"no derivative rule for {name}")

    def convert(e: sp.Expr) -> tuple:
        if e == X:
            return ("X",)
        if e == X2:
            return ("X2",)
        if e == Y:
            return ("Y",)
        if not e.free_symbols:
            return ("const", _number(e))
        if isinstance(e, sp.Add):
            return ("add", tuple(convert(t) for t in e.args))
        if isinstance(e, sp.Mul):
            coeff, rest = e.as_independent(X, X2, Y, as_Add=False)
            if coeff != 1:
                return ("mul", (("const", _number(coeff)), convert(rest)))
            return ("mul", tuple(convert(f) for f in e.args))
        if isinstance(e, sp.Pow) and e.exp.is_Number:
            return ("pow", convert(e.base), _number(e.exp))
        if isinstance(e, sp.Function) and type(e) in BY_CLASS and len(e.args) == 1:
            return ("fn", BY_CLASS[type(e)].name, convert(e.args[0]))
        if isinstance(e, sp.Heaviside):
            return ("fn", "heaviside", convert(e.args[0]))
        raise CodegenError(f"cannot build the derivative rule {e} of {name} on the graph")

    if isinstance(function.derivative, tuple):
        return tuple(convert(r) for r in function.derivative)
    return convert(function.derivative)


def _sympy_number(v: Number) -> sp.Expr:
    if isinstance(v, Fraction):
        return sp.Rational(v.numerator, v.denominator)
    return sp.Float(v)
