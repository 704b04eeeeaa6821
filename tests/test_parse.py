"""symsm.model.parse: the allow-list parser builds exact sympy expressions and refuses everything else."""

from __future__ import annotations

import ast
import random
import sys

import pytest
import sympy as sp
from bounds import bounded_work
from sympy.codegen.cfunctions import log1p

from symsm import ModelError
from symsm.model.parse import parse_formula

x, mu = sp.symbols("x mu", real=True)
s = sp.Symbol("s", positive=True)
SYMS = {"x": x, "mu": mu, "s": s}
W = sp.ImmutableMatrix(2, 2, lambda i, j: sp.Symbol(f"W_{min(i, j)}_{max(i, j)}", real=True))  # symmetric


@pytest.mark.parametrize(
    "text, expected",
    [
        ("-(x - mu)**2 / (2*s**2)", -((x - mu) ** 2) / (2 * s**2)),
        ("0.5*x", x / 2),
        ("1e-3*x", sp.Float(1e-3) * x),
        ("x - mu - s + 1", x - mu - s + 1),
        ("x / s / mu", x / s / mu),
        ("-x**2", -(x**2)),
        ("log1p(x**2) + erf(x) + atan(mu*x)", log1p(x**2) + sp.erf(x) + sp.atan(mu * x)),
        ("sqrt(s) * exp(-x) + pi + E", sp.sqrt(s) * sp.exp(-x) + sp.pi + sp.E),
        ("+x", x),
    ],
)
def test_parses_to_exact_sympy(text, expected):
    assert sp.simplify(parse_formula(text, SYMS) - expected) == 0


def test_long_sum_is_flat_not_deep():
    expr = parse_formula(" + ".join(["x"] * 2000), SYMS)
    assert expr == 2000 * x


def _distinct_prime_denominators(n: int) -> str:
    return "+".join(f"x/{p}" for p in sp.primerange(10**19, 10**19 + 60 * n))


# Each entry: (category, formula). Code-execution and file-access payloads try to create the file `pwned` or
# import a module, so "no side effect" is checked, not assumed.
HOSTILE = [
    # code execution
    ("exec", "__import__('os').system('touch pwned')"),
    ("exec", "__import__('antigravity')"),
    ("exec", "().__class__.__bases__[0].__subclasses__()"),
    ("exec", "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen']"),
    ("exec", "exp.__globals__['__builtins__']['eval']('1')"),
    ("exec", "x.__class__"),
    ("exec", "x.real"),
    ("exec", "exp(x).func"),
    ("exec", "(lambda: __import__('os').system('touch pwned'))()"),
    ("exec", 'f\'{__import__("os").system("touch pwned")}\''),
    ("exec", "eval('1')"),
    ("exec", "exec('import os')"),
    ("exec", "compile('1', 'f', 'eval')"),
    ("exec", "getattr(x, 'real')"),
    ("exec", "globals()"),
    ("exec", "vars()"),
    ("exec", "breakpoint()"),
    ("exec", "__builtins__"),
    ("exec", "__class__"),
    ("exec", "sympify('x')"),
    ("exec", "Symbol('y')"),
    ("exec", "sympy.exp(x)"),
    ("exec", "x; import os"),
    ("exec", "x  # a comment hides the rest of a line\n + __import__('os').system('touch pwned')"),
    ("exec", "x \\\n + mu"),
    ("exec", "import os"),
    ("exec", "(y := 1)"),
    ("exec", "exp(*[x])"),
    ("exec", "exp(**{'x': 1})"),
    ("exec", "exp(x=1)"),
    ("exec", "*x"),
    ("exec", "x if mu else s"),
    ("exec", "[x for x in (1,)]"),
    ("exec", "{x: 1}"),
    ("exec", "{x}"),
    ("exec", "(x, mu)"),
    ("exec", "await x"),
    ("exec", "(yield x)"),
    ("exec", "x[0]"),
    ("exec", "log(x)[0]"),
    ("exec", "W[0:1]"),
    ("exec", "W[x, 0]"),
    ("exec", "W[-1, 0]"),
    ("exec", "W[0, 0][0]"),
    ("exec", "W[0, 0].__class__"),
    ("exec", "W[5, 0]"),
    ("exec", "W"),
    ("exec", "x\u202e + mu"),  # a bidirectional override: shown text differs from parsed text
    ("exec", "\uff58 + mu"),  # a fullwidth x, which Python would silently read as x
    ("exec", "x\u200b"),
    ("exec", "x\x00"),
    ("exec", "x\x1b[2J"),
    ("exec", "x < mu"),
    ("exec", "x and mu"),
    ("exec", "not x"),
    ("exec", "x @ mu"),
    ("exec", "x // mu"),
    ("exec", "x % mu"),
    ("exec", "x ^ mu"),
    ("exec", "x << 2"),
    ("exec", "~x"),
    ("exec", "'string'"),
    ("exec", "b'bytes'"),
    ("exec", "None"),
    ("exec", "True"),
    ("exec", "..."),
    ("exec", "1j*x"),
    ("exec", "exp(x, mu)"),
    ("exec", "log"),
    ("exec", "x / 0"),
    ("exec", "x / (mu - mu)"),
    # file access
    ("file", "open('/etc/passwd')"),
    ("file", "open('/etc/passwd').read()"),
    ("file", "open('pwned', 'w').write('x')"),
    ("file", "__import__('pathlib').Path('pwned').write_text('x')"),
    ("file", "exp(open('pwned', 'w'))"),
    ("file", "__import__('shutil').rmtree('.')"),
    # resource exhaustion
    ("resource", "9**9**9"),
    ("resource", "x**99999999"),
    ("resource", "x**-99999999"),
    ("resource", "x**(9**9**9)"),
    ("resource", "10**400"),
    ("resource", "(2**100)**100"),
    ("resource", "1" * 40),
    ("resource", "0x" + "f" * 10_000),
    ("resource", "1e999 * x"),
    ("resource", "x**exp(exp(1000))"),
    ("resource", "exp(exp(1000))**x"),
    ("resource", "((x**1000)**1000)**1000"),
    ("resource", "(2**1000*x)**1000"),
    ("resource", "*".join(["2**1000"] * 100)),
    ("resource", "x**(2**1000*2**1000)"),
    ("resource", "*".join(["x"] * 1001)),
    ("resource", "*".join(["(x + 1)"] * 1001)),
    ("resource", _distinct_prime_denominators(1000)),
    ("resource", "x" + "+x" * 5_000_000),  # 10 MB
    ("resource", "x" + "*x" * 400_000),  # a product too long for Python's parser
    ("resource", "(" * 300 + "x" + ")" * 300),
    ("resource", "exp(" * 150 + "x" + ")" * 150),
    ("resource", "-" * 200_000 + "x"),
    ("resource", "2*(1 + " * 40 + "+".join(f"mu**{i}*x" for i in range(1, 1000)) + ")" * 40),
]


MAX_OPERANDS = 25_000  # operands sympy may flatten into sums and products while refusing one hostile formula
MIN_PEAK_BYTES = 32 * 2**20  # memory it may allocate at the peak: this, or 512 bytes per character of formula
PEAK_BYTES_PER_CHARACTER = 512


@pytest.mark.parametrize("category, text", HOSTILE, ids=[f"{c}-{t[:24]!r}" for c, t in HOSTILE])
def test_hostile_formulas_are_refused_quickly(category, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    modules = set(sys.modules)
    # Bounds on work and memory, not on time (a shared CI machine can be slow): today the worst input flattens
    # ~12 000 operands into sympy sums and products, and a product of 400 000 factors (cut into pieces for
    # Python's parser) allocates ~170 MB of syntax trees at its peak, ~210 bytes per character of formula.
    peak = max(MIN_PEAK_BYTES, PEAK_BYTES_PER_CHARACTER * len(text))
    with bounded_work(max_operands=MAX_OPERANDS, max_peak_bytes=peak), pytest.raises(ModelError) as info:
        parse_formula(text, SYMS, indexed={"W": W})
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 700  # one clear line, not the whole formula
    assert list(tmp_path.iterdir()) == []  # no side effect on the working directory
    assert set(sys.modules) - modules == set()  # nothing was imported


def test_at_least_25_hostile_strings_per_concern():
    counts = {c: sum(1 for k, _ in HOSTILE if k == c) for c in ("exec", "file", "resource")}
    assert sum(counts.values()) >= 25 and all(counts.values()), counts


def test_messages_show_the_fragment():
    with pytest.raises(ModelError, match=r"attribute access is not allowed in a formula: 'x.real'"):
        parse_formula("1 + x.real", SYMS)
    with pytest.raises(ModelError, match=r"call to 'open' is not allowed"):
        parse_formula("open('f')", SYMS)
    with pytest.raises(ModelError, match="undeclared name 'y'"):
        parse_formula("x + y", SYMS)
    with pytest.raises(ModelError, match="dunder"):
        parse_formula("__class__", SYMS)


def test_refuses_non_strings_and_clashing_names():
    with pytest.raises(ModelError, match="must be a string"):
        parse_formula(sp.Symbol("x"), SYMS)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="clashes"):
        parse_formula("exp", {"exp": sp.Symbol("exp")})


def test_entries_of_declared_matrix_and_vector_parameters_can_be_indexed():
    b = sp.ImmutableMatrix([sp.Symbol("b_0", real=True), sp.Symbol("b_1", real=True)])
    expr = parse_formula("W[0, 1]*x + W[1, 0]*mu + b[1]*s + W[1, 1]", SYMS, indexed={"W": W, "b": b})
    assert expr == W[0, 1] * x + W[0, 1] * mu + b[1] * s + W[1, 1]  # symmetric: [1, 0] is [0, 1]
    assert parse_formula("b[1, 0]", SYMS, indexed={"b": b}) == b[1]  # a vector is also a column
    with pytest.raises(ModelError, match="takes two indices"):
        parse_formula("W[0]", SYMS, indexed={"W": W})
    with pytest.raises(ModelError, match="index out of range for 'b'"):
        parse_formula("b[2]", SYMS, indexed={"b": b})
    with pytest.raises(ModelError, match=r"only matrix and vector parameters can be indexed; declared: b"):
        parse_formula("x[0]", SYMS, indexed={"b": b})


def test_matrix_parameters_from_specs_are_indexable_through_from_string():
    import symsm

    model = symsm.Model.from_string(
        "-(W[0, 0]*x0 + W[0, 1]*x1)**2/2 - (W[1, 0]*x0 + W[1, 1]*x1)**2/2 - M[1, 0]*x0*x1 - M[0, 0]*x0**2"
        " - M[1, 1]*x1**2 - b[1]*x1**4 - b[0]*x0**4",
        data="x0 x1",
        params=[
            {"name": "W", "shape": [2, 2]},
            {"name": "M", "shape": [2, 2], "symmetric": True},
            {"name": "b", "shape": [2], "positive": True},
        ],
    )
    names = {str(p): p for p in model.params}
    assert model.param_names[:4] == ["W_0_0", "W_0_1", "W_1_0", "W_1_1"]
    x0, x1 = model.data
    expanded = sp.expand(model.log_f)
    assert (
        expanded.coeff(x0 * x1) == -names["M_0_1"] - names["W_0_0"] * names["W_0_1"] - names["W_1_0"] * names["W_1_1"]
    )
    assert names["b_0"].is_positive


def _signed_terms(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    pieces = ["x", "mu", "1e-3*x", "2.5e+1*mu", "x**-2", "-(x - mu)", "s**2*x", "exp(-x)", "0x1f*mu", "(x + mu)**2"]
    return [rng.choice(["+", "-"]) + " " + rng.choice(["", "-", "+"]) + rng.choice(pieces) for _ in range(n)]


def test_sums_longer_than_pythons_parser_allows_are_parsed_exactly():
    terms = _signed_terms(6000)
    text = " ".join(terms).lstrip("+ ")
    with pytest.raises(RecursionError):
        ast.parse(text, mode="eval")  # the case being handled: Python alone cannot build this tree
    if terms[0].startswith("-"):
        text = "-" + text  # lstrip took the sign of the first term with it
    expected = sp.Add(*[parse_formula("0 " + t, SYMS) for t in terms])  # each term on its own
    got = parse_formula(text, SYMS)
    for point in ({x: 0.7, mu: -0.3, s: 1.3}, {x: -1.9, mu: 2.2, s: 0.4}):  # floats are summed in another order
        assert float(got.subs(point)) == pytest.approx(float(expected.subs(point)), rel=1e-12)


def test_long_sum_of_a_matrix_entry_and_decimal_exponents():
    text = " + ".join(["W[0, 1]*x", "1e-3*mu", "x**-2"] * 1500)
    assert parse_formula(text, SYMS, indexed={"W": W}) == 1500 * (W[0, 1] * x + sp.Float(1e-3) * mu + x**-2)


def test_bounds_are_reported_with_the_limit():
    with pytest.raises(ModelError, match="exponent 1001, beyond the limit 1000"):
        parse_formula("x**1000 * x", SYMS)
    assert parse_formula("x**1000 / x", SYMS) == x**999
    with pytest.raises(ModelError, match="more than 400 digits"):
        parse_formula("2**1000 * 2**1000 * x", SYMS)
    assert parse_formula("2**1000 * x / 2**999", SYMS) == 2 * x
    with pytest.raises(ModelError, match="characters long; the limit is 50"):
        parse_formula("x" * 51, SYMS, max_length=50)


def test_the_work_budget_refuses_re_wrapping_a_large_sum(monkeypatch):
    import symsm.model.parse as parse

    inner = " + ".join(f"mu**{i}*x" for i in range(1, 300))
    once = f"2*(1 + {inner})"
    assert parse_formula(once, SYMS).is_Add  # a legitimate formula of the same kind is fine
    monkeypatch.setattr(parse, "MIN_WORK", 0)
    wrapped = "2*(1 + " * 20 + inner + ")" * 20
    with pytest.raises(ModelError, match="too expensive to build"):
        parse_formula(wrapped, SYMS)


def test_a_formula_may_span_lines_but_has_no_comments():
    assert parse_formula("-(x - mu)**2\n  / (2*s**2)\r\n\t+ x", SYMS) == -((x - mu) ** 2) / (2 * s**2) + x
    with pytest.raises(ModelError, match="comments are not part of the formula language"):
        parse_formula("x  # a note", SYMS)
