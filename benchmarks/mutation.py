"""Mutation check: plausible bugs planted in a copy of the core; the tests must catch every one.

    python -m benchmarks.mutation                    every mutant; writes benchmarks/MUTATION.md
    python -m benchmarks.mutation --only f_log1p t_pow_frac
    python -m benchmarks.mutation --group graph      the mutants whose name starts with "g_"
    python -m benchmarks.mutation --list             check that every mutation still applies, and list them

Each mutant is (file, exact source snippet, replacement): the snippet must occur exactly once in the file, or
the script stops with "mutation X no longer applies" (the code moved under it: update the snippet, keep it
short and specific). For each mutant, `symsm/` and `tests/` are copied into a fresh temporary directory (the
worktree is never modified), the replacement is applied there, and the mutant's test files run on the copy
(PYTHONPATH = the copy, a fresh SYMSM_CACHE_DIR, `pytest -x`): the first failing test is the one that caught
it; a mutant whose tests all pass SURVIVED. Before the mutants, the same test selections run once on the
unmodified copy and must pass. Not part of CI: it takes several minutes (two cores: about 10–20 s a mutant).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "MUTATION.md"
TIMEOUT_S = 900

# Test selections (pytest arguments, run from the copy's root).
# -k applies to every file of one invocation; it matches test names, parametrize ids and module names.
GRAPH_TESTS = (
    "tests/test_function_derivatives.py",
    "tests/test_paths.py",
    "-k",
    "graph and not numba-python or variants",
)
FUNCTION_TESTS = ("tests/test_function_derivatives.py", "-k", "not numba-python")
SYMPY_TESTS = ("tests/test_function_derivatives.py", "tests/test_paths.py", "-k", "sympy and not numba-python")
PATHS_GRAPH = ("tests/test_paths.py", "-k", "graph and not numba-python or variants")
PATHS_SYMPY = ("tests/test_paths.py", "-k", "sympy and not numba-python and not refuses")
PATHS_WEIGHTED = ("tests/test_paths.py", "-k", "(truncated or nonnegative) and not numba-python")
VARIANTS = ("tests/test_paths.py", "-k", "variants")
SANDWICH = ("tests/test_sandwich.py",)
MOMENTS = (
    "tests/test_moments.py",
    "tests/test_paths.py",
    "-k",
    "test_moments or ((gaussian or poly or ggm) and not numba-python)",
)
CUDA = ("tests/cuda/test_cuda_loss.py", "tests/cuda/test_cuda_domains.py")
CUDA_ENV = {"NUMBA_ENABLE_CUDASIM": "1"}

FUNCTIONS = "symsm/core/functions.py"
GRAPH = "symsm/derive/graph.py"
TAPE = "symsm/ir/ir.py"
OBJECTIVES = "symsm/derive/objectives.py"
DERIVATION = "symsm/derive/derivation.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    snippet: str
    replacement: str
    tests: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    what: str = ""


def _g(name: str, snippet: str, replacement: str, what: str) -> Mutant:
    """A derivative rule of the expression graph (symsm/derive/graph.py)."""
    return Mutant(name, GRAPH, snippet, replacement, GRAPH_TESTS, what=what)


def _f(name: str, snippet: str, replacement: str, what: str) -> Mutant:
    """A derivative rule of the function table (symsm/core/functions.py), shared by both derivation paths."""
    return Mutant(name, FUNCTIONS, snippet, replacement, FUNCTION_TESTS, what=what)


def _t(name: str, snippet: str, replacement: str, what: str) -> Mutant:
    """A local derivative rule of the sympy path's tape (symsm/ir/ir.py): reverse sweeps of ∇θ."""
    return Mutant(name, TAPE, snippet, replacement, SYMPY_TESTS, what=what)


MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- graph: derivative rules
    # ---------------------------------------------------------------- the function table: one derivative rule
    # per function, used by both the graph AD and the sympy path's tape (X the argument, Y the value)
    _f("f_exp", 'Function("exp", sp.exp, Y,', 'Function("exp", sp.exp, X,', "exp′ = a"),
    _f("f_log", 'Function("log", sp.log, 1 / X,', 'Function("log", sp.log, 1 / X**2,', "log′ = a⁻²"),
    _f("f_sin", 'Function("sin", sp.sin, sp.cos(X),', 'Function("sin", sp.sin, -sp.cos(X),', "sin′ = −cos"),
    _f("f_cos", 'Function("cos", sp.cos, -sp.sin(X),', 'Function("cos", sp.cos, sp.sin(X),', "cos′ = sin"),
    _f("f_tan", 'Function("tan", sp.tan, 1 + Y**2,', 'Function("tan", sp.tan, 1 - Y**2,', "tan′ = 1 − tan²"),
    _f("f_sinh", 'Function("sinh", sp.sinh, sp.cosh(X),', 'Function("sinh", sp.sinh, sp.sinh(X),', "sinh′ = sinh"),
    _f("f_cosh", 'Function("cosh", sp.cosh, sp.sinh(X),', 'Function("cosh", sp.cosh, -sp.sinh(X),', "cosh′ = −sinh"),
    _f("f_tanh", 'Function("tanh", sp.tanh, 1 - Y**2,', 'Function("tanh", sp.tanh, 1 + Y**2,', "tanh′ = 1 + tanh²"),
    _f("f_asin", 'Function("asin", sp.asin, 1 / sp.sqrt(1 - X**2),', 'Function("asin", sp.asin, sp.sqrt(1 - X**2),',
       "asin′ = √(1 − a²)"),
    _f("f_acos", 'Function("acos", sp.acos, -1 / sp.sqrt(1 - X**2),',
       'Function("acos", sp.acos, 1 / sp.sqrt(1 - X**2),', "acos′ = +1/√(1 − a²)"),
    _f("f_atan", 'Function("atan", sp.atan, 1 / (1 + X**2),', 'Function("atan", sp.atan, 1 / (1 - X**2),',
       "atan′ = 1/(1 − a²)"),
    _f("f_asinh", 'Function("asinh", sp.asinh, 1 / sp.sqrt(1 + X**2),',
       'Function("asinh", sp.asinh, sp.sqrt(1 + X**2),', "asinh′ = √(1 + a²)"),
    _f("f_acosh", 'Function("acosh", sp.acosh, 1 / sp.sqrt(X**2 - 1),',
       'Function("acosh", sp.acosh, 1 / sp.sqrt(X**2 + 1),', "acosh′ = 1/√(a² + 1)"),
    _f("f_atanh", 'Function("atanh", sp.atanh, 1 / (1 - X**2),', 'Function("atanh", sp.atanh, 1 / (1 + X**2),',
       "atanh′ = 1/(1 + a²)"),
    _f("f_log1p", 'Function("log1p", log1p, 1 / (1 + X),', 'Function("log1p", log1p, 1 / (1 - X),',
       "log1p′ = 1/(1 − a)"),
    _f("f_expm1", 'Function("expm1", expm1, Y + 1,', 'Function("expm1", expm1, Y,', "expm1′ = expm1"),
    _f("f_erf", 'Function("erf", sp.erf, _TWO_OVER_SQRT_PI * sp.exp(-(X**2)),',
       'Function("erf", sp.erf, _TWO_OVER_SQRT_PI / 2 * sp.exp(-(X**2)),', "erf′ missing the factor 2"),
    _f("f_erfc", 'Function("erfc", sp.erfc, -_TWO_OVER_SQRT_PI * sp.exp(-(X**2)),',
       'Function("erfc", sp.erfc, _TWO_OVER_SQRT_PI * sp.exp(-(X**2)),', "erfc′ = +erf′"),
    # ---------------------------------------------------------------- graph: powers and products
    _g("g_pow_int", "return [(a, self.mul(self.const(e), self.pow(a, e - 1)))]",
       "return [(a, self.mul(self.const(e - 1), self.pow(a, e - 1)))]", "(aⁿ)′ = (n − 1)aⁿ⁻¹"),
    _g("g_pow_frac", "return [(a, self.mul(self.const(e), n, self.pow(a, -1)))]",
       "return [(a, self.mul(n, self.pow(a, -1)))]", "(aʳ)′ = aʳ/a (r dropped)"),
    _g("g_powv", '(b, self.mul(n, self.fn("log", a)))', '(b, self.mul(b, self.fn("log", a)))',
       "∂(aᵇ)/∂b = b log a"),
    _g("g_mul_nary", "return [(a, self.mul(*(args[:k] + args[k + 1 :]))) for k, a in enumerate(args)]",
       "return [(a, self.mul(*(args[:k] + args[k + 2 :]))) for k, a in enumerate(args)]",
       "n-ary product rule drops a factor"),
    # ---------------------------------------------------------------- graph: sweeps
    _g("g_reverse_sum", "bar = parts[0] if len(parts) == 1 else self.add(*parts)", "bar = parts[0]",
       "reverse sweep keeps one contribution per node"),
    _g("g_reverse_chain", "c = self.mul(bar, local, keep=shared)", "c = self.mul(local, keep=shared)",
       "reverse sweep forgets the adjoint"),
    _g("g_tangent_leaf", 'if op == "leaf":\n            out = self.ONE',
       'if op == "leaf":\n            out = self.const(2)', "forward tangent seeds 2"),
    _g("g_tangent_add", "out = self.add(*[self.tangent(a, bit, memo) for a in self.args[n] if self.mask[a] & flag])",
       "out = self.add(*[self.tangent(a, bit, memo) for a in self.args[n][1:] if self.mask[a] & flag])",
       "forward tangent of a sum drops a term"),
    _g("g_tangent_mul", "return [(args[k], lambda k=k: self.mul(*(args[:k] + args[k + 1 :]))) for k in picks]",
       "return [(args[k], lambda k=k: self.mul(*(args[:k] + args[k + 2 :]))) for k in picks]",
       "forward tangent of a product drops a factor"),
    Mutant("g_directional_seed", GRAPH, "out = seeds.get(n, self.ZERO)", "out = self.ONE", VARIANTS,
           what="directional derivative ignores v"),
    Mutant("g_totals_invariant", "symsm/ir/graph_kernels.py", "total = g.mul(n_leaf, g.add(*invariant))",
           "total = g.add(*invariant)", PATHS_GRAPH, what="Σ_t c = c, not N·c"),
    # ---------------------------------------------------------------- sympy path: the tape
    _t("t_pow_frac", "local = op.exp * target / arg", "local = target / arg", "(aʳ)′ = aʳ/a"),
    _t("t_reverse_sum", "bar = self.emit(sp.Add(*parts))", "bar = self.emit(parts[0])",
       "reverse sweep keeps one contribution"),
    _t("t_reverse_chain", "contributions.setdefault(arg, []).append(self.emit(bar * local))",
       "contributions.setdefault(arg, []).append(self.emit(local))", "reverse sweep forgets the adjoint"),
    _t("t_epilogue_chain", "contributions.setdefault(arg, []).append(epi.emit(bar * local))",
       "contributions.setdefault(arg, []).append(epi.emit(local))", "epilogue chain rule forgets the adjoint"),
    Mutant("t_hessian_tangent", "symsm/ir/fit_kernels.py", "tangent: dict[sp.Symbol, sp.Expr] = {p: sp.Integer(1)}",
           "tangent: dict[sp.Symbol, sp.Expr] = {p: sp.Integer(2)}", SANDWICH, what="θ-Hessian tangents seeded 2"),
    # ---------------------------------------------------------------- objectives
    Mutant("obj_graph_half", OBJECTIVES,
           "return g.add(*mg.hessian_diag, g.mul(half, g.add(*[g.pow(s, 2) for s in mg.score])))",
           "return g.add(*mg.hessian_diag, g.add(*[g.pow(s, 2) for s in mg.score]))", PATHS_GRAPH,
           what="graph exact objective: ‖s‖² without ½"),
    Mutant("obj_graph_weighted_dh_sign", OBJECTIVES, "g.mul(dh, s)]", "g.neg(g.mul(dh, s))]", PATHS_WEIGHTED,
           what="graph weighted: −h′s"),
    Mutant("obj_graph_weighted_h", OBJECTIVES, "terms += [g.mul(h, g.add(hd, g.mul(half, g.pow(s, 2)))), ",
           "terms += [g.add(hd, g.mul(h, half, g.pow(s, 2))), ", PATHS_WEIGHTED, what="graph weighted: ∂ᵢ² unweighted"),
    Mutant("obj_graph_weight_prime", "symsm/ir/graph_kernels.py",
           "self.weight_prime = [g.tangent(h, i, {}) for i, h in enumerate(self.weight)]",
           "self.weight_prime = [g.mul(g.const(2), g.tangent(h, i, {})) for i, h in enumerate(self.weight)]",
           PATHS_WEIGHTED, what="graph h′ doubled"),
    Mutant("obj_sympy_half", DERIVATION, "sp.Rational(1, 2) * sp.Add(*[s**2 for s in self.score])",
           "sp.Add(*[s**2 for s in self.score])", PATHS_SYMPY, what="sympy exact objective: ‖s‖² without ½"),
    Mutant("obj_sympy_weighted_dh_sign", DERIVATION, "sp.Rational(1, 2) * h * s**2 + dh * s",
           "sp.Rational(1, 2) * h * s**2 - dh * s", PATHS_WEIGHTED, what="sympy weighted: −h′s"),
    Mutant("obj_sympy_weighted_h", DERIVATION, "[h * hd + sp.Rational(1, 2)", "[hd + sp.Rational(1, 2)",
           PATHS_WEIGHTED, what="sympy weighted: ∂ᵢ² unweighted"),
    Mutant("obj_sympy_weight_prime", DERIVATION, "return tuple(sp.diff(h, xi) for h, xi in",
           "return tuple(2 * sp.diff(h, xi) for h, xi in", PATHS_WEIGHTED, what="sympy h′ doubled"),
    Mutant("obj_sliced_half", OBJECTIVES, "terms.append(g.add(second, g.mul(half, g.pow(first, 2))))",
           "terms.append(g.add(second, g.pow(first, 2)))", VARIANTS, what="sliced: (vᵀs)² without ½"),
    Mutant("obj_sliced_mean", OBJECTIVES,
           "return g.mul(g.const(Fraction(1, self.n_directions)), g.add(*terms))", "return g.add(*terms)", VARIANTS,
           what="sliced: sum over directions, not the mean"),
    Mutant("obj_sliced_vr_mean", OBJECTIVES, "trace = g.mul(g.const(Fraction(1, self.n_directions)), g.add(*second))",
           "trace = g.add(*second)", VARIANTS, what="sliced_vr: trace summed over directions"),
    Mutant("obj_denoising_shift", OBJECTIVES, "mapping = {x: g.add(x, g.mul(sigma, e))",
           "mapping = {x: g.sub(x, g.mul(sigma, e))", VARIANTS, what="denoising: x − σε"),
    Mutant("obj_denoising_scale", OBJECTIVES, "inv_sigma = g.const(1.0 / self.noise_scale)",
           "inv_sigma = g.const(1.0 / self.noise_scale**2)", VARIANTS, what="denoising: ε/σ² for ε/σ"),
    # ---------------------------------------------------------------- moments pass
    Mutant("moments_scale", "symsm/runtime/moments.py", "np.sqrt(d * np.clip(lam, 0.0, None))",
           "np.sqrt(np.clip(lam, 0.0, None))", MOMENTS, what="matching points without the √d"),
    Mutant("moments_centre", "symsm/runtime/moments.py", "cov = second - np.outer(m1, m1)", "cov = second", MOMENTS,
           what="second moments not centred"),
    Mutant("moments_shift", "symsm/runtime/moments.py", "return shift.astype(np.float64) + m1, cov",
           "return m1, cov", MOMENTS, what="mean without the shift"),
    # ---------------------------------------------------------------- fitting
    Mutant("se_naive", "symsm/fitting/fit.py", "cov = np.linalg.solve(H, np.linalg.solve(H, V).T) / n",
           "cov = np.linalg.inv(H) / n", SANDWICH, what="SEs from H⁻¹/N"),
    Mutant("se_divisor", "symsm/fitting/fit.py", "cov = np.linalg.solve(H, np.linalg.solve(H, V).T) / n",
           "cov = np.linalg.solve(H, np.linalg.solve(H, V).T) / (n - 1)", SANDWICH, what="sandwich / (N − 1)"),
    Mutant("se_grad_cov", "symsm/runtime/accumulate.py", "cov = self.s2 / self.n - np.outer(m, m)",
           "cov = self.s2 / self.n", SANDWICH, what="V not centred"),
    Mutant("closed_form_sign", "symsm/fitting/fit.py", "theta = _solve_spd(A, -b)", "theta = _solve_spd(A, b)",
           SANDWICH, what="θ̂ = +A⁻¹b"),
    Mutant("closed_form_b_weighted", DERIVATION, "+ dh[i] * coeffs[i][k]", "- dh[i] * coeffs[i][k]",
           SANDWICH, what="weighted b: −h′a"),
    Mutant("closed_form_b", DERIVATION, "sp.diff(coeffs[i][k], x[i]) + offsets[i] * coeffs[i][k] for i",
           "offsets[i] * coeffs[i][k] for i", SANDWICH, what="b without ∂ᵢa"),
    # ---------------------------------------------------------------- CUDA (simulator)
    Mutant("cuda_epilogue_n", "symsm/backends/cuda/templates/numba_cuda.py.j2",
           "result[{{ loop.index0 }}] = ({{ expr }}) / n_samples", "result[{{ loop.index0 }}] = ({{ expr }})", CUDA,
           CUDA_ENV, what="CUDA epilogue does not divide by N"),
    Mutant("cuda_epilogue_blocks", "symsm/backends/cuda/templates/numba_cuda.py.j2",
           "totals[k] += partial[i_block, k]", "totals[k] = partial[i_block, k]", CUDA, CUDA_ENV,
           what="CUDA epilogue keeps the last block only"),
]  # fmt: skip


class MutationError(RuntimeError):
    pass


def check_applies(mutants: list[Mutant], root: Path = ROOT) -> None:
    """Every snippet occurs exactly once in its file (else: loud failure naming the mutant)."""
    problems = []
    for m in mutants:
        path = root / m.file
        if not path.is_file():
            problems.append(f"mutation {m.name} no longer applies: {m.file} does not exist")
            continue
        count = path.read_text().count(m.snippet)
        if count == 0:
            problems.append(f"mutation {m.name} no longer applies: its snippet is not in {m.file}: {m.snippet!r}")
        elif count > 1:
            problems.append(f"mutation {m.name} is ambiguous: its snippet occurs {count} times in {m.file}")
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        problems.append("mutant names are not unique")
    if problems:
        raise MutationError("\n".join(problems))


def make_copy(base: Path) -> Path:
    """symsm/ and tests/ copied into `base` (no __pycache__), with pyproject.toml for pytest's settings."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("symsm", "tests"):
        shutil.copytree(ROOT / name, base / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", base / "pyproject.toml")
    return base


def run_tests(copy: Path, tests: tuple[str, ...], env_extra: dict[str, str], cache: Path) -> tuple[int, str, float]:
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = str(copy)
    env["SYMSM_CACHE_DIR"] = str(cache)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.perf_counter() - start
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else ""


def run_mutant(m: Mutant | None, tests: tuple[str, ...], env: dict[str, str]) -> tuple[str, float, str]:
    """(verdict, seconds, output) — verdict: "SURVIVED", "caught by <test>", "caught (<how>)"."""
    with tempfile.TemporaryDirectory(prefix="symsm-mutant-") as tmp:
        copy = make_copy(Path(tmp) / "tree")
        if m is not None:
            path = copy / m.file
            text = path.read_text()
            if text.count(m.snippet) != 1:
                raise MutationError(f"mutation {m.name} no longer applies")
            path.write_text(text.replace(m.snippet, m.replacement))
        rc, output, seconds = run_tests(copy, tests, env, Path(tmp) / "cache")
    if rc == 0:
        return "SURVIVED", seconds, output
    if rc == 1:
        return f"caught by `{first_failure(output) or '?'}`", seconds, output
    if rc == -1:
        return "caught (timeout)", seconds, output
    if rc == 5:
        raise MutationError(f"no tests collected for {' '.join(tests)}")
    return f"caught (pytest exit {rc}: {first_failure(output) or 'error'})", seconds, output


def table(rows: list[tuple[Mutant, str, float]]) -> str:
    lines = [
        "| mutant | file | bug | tests run | result | s |",
        "|---|---|---|---|---|---:|",
    ]
    for m, verdict, seconds in rows:
        tests = " ".join(m.tests).replace("|", "\\|")
        lines.append(f"| {m.name} | {m.file} | {m.what} | `{tests}` | {verdict} | {seconds:.0f} |")
    survived = sum(v == "SURVIVED" for _, v, _ in rows)
    lines.append("")
    lines.append(f"{len(rows)} mutants, {survived} survived.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    parser.add_argument("--group", default=None, help="mutants whose name starts with this prefix")
    parser.add_argument("--list", action="store_true", help="check that the mutations apply and list them")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmodified copy")
    parser.add_argument("--out", default=str(OUT), help="markdown table (default benchmarks/MUTATION.md)")
    args = parser.parse_args(argv)
    check_applies(MUTANTS)
    chosen = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutants: {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.group:
        chosen = [m for m in chosen if m.name.startswith(args.group)]
    if args.list:
        for m in chosen:
            print(f"{m.name:28} {m.file:40} {m.what}")
        return 0
    if not args.no_baseline:
        selections = sorted({(m.tests, tuple(sorted(m.env.items()))) for m in chosen})
        for tests, env in selections:
            verdict, seconds, output = run_mutant(None, tests, dict(env))
            passed = verdict == "SURVIVED"  # nothing to catch on the unmodified tree: every test passed
            print(f"baseline {' '.join(tests)}: {'passed' if passed else verdict} ({seconds:.0f} s)", flush=True)
            if not passed:
                print(output[-3000:])
                raise MutationError(f"the unmodified tree fails {' '.join(tests)}: fix that first")
    rows = []
    for m in chosen:
        verdict, seconds, _ = run_mutant(m, m.tests, m.env)
        print(f"{m.name:28} {verdict} ({seconds:.0f} s)", flush=True)
        rows.append((m, verdict, seconds))
    text = table(rows)
    print(text)
    header = (
        "# Mutation check\n\n"
        "`python -m benchmarks.mutation` (see benchmarks/mutation.py): each row is a plausible bug planted in a copy "
        "of the source; the tests listed ran on that copy (`pytest -x`, a fresh kernel cache), and the first "
        "failing test is shown.\n\n"
    )
    if args.only is None and args.group is None:
        Path(args.out).write_text(header + text + "\n")
    else:
        print(f"(a subset: {args.out} not written)")
    return 1 if any(v == "SURVIVED" for _, v, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
