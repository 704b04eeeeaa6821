"""Display forms of a derivation (symsm/derive/display.py, text.py): simplified for reading, equal to the
derivation's expressions, the same text in `str(der)` and `symsm derive`, aligned in --pretty."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.cli.demo import demo_model
from symsm.cli.main import main
from symsm.derive.display import readable

BANANA = symsm.Model.from_string(
    "-(x0 - m)**2/(2*s**2) - (x1 - b*x0**2)**2/2", data="x0 x1", params="m s b", positive="s", name="banana"
)


def _equal(a: sp.Expr, b: sp.Expr, symbols: list[sp.Symbol]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = {s: sp.Float(rng.uniform(0.5, 2.0)) for s in symbols}
        va, vb = complex(a.evalf(30, subs=point)), complex(b.evalf(30, subs=point))
        assert abs(va - vb) <= 1e-20 * max(1.0, abs(va)), (a, b)


@pytest.mark.parametrize("model", [demo_model(), BANANA], ids=["student_t", "banana"])
def test_display_forms_equal_the_derivation(model):
    der = model.derive()
    symbols = [*model.data, *model.params]
    shown = der.readable
    for exact, form in [
        *zip(der.score, shown.score, strict=True),
        *zip(der.hessian_diag, shown.hessian_diag, strict=True),
    ]:
        _equal(exact, form, symbols)
    _equal(der.objective, shown.objective, symbols)


def test_display_forms_read_better():
    der = demo_model().derive()
    text = str(der)
    assert "2*(-m0 + x0)*(m0 - x0)" not in text  # (x0 − m0)² + 2(x0 − m0)(m0 − x0) is −(x0 − m0)²
    assert "nu*s**2 - (-m0 + x0)**2 + (-m1 + x1)**2" in text
    score = sp.sstr(BANANA.derive().readable.score[0])
    assert "2*s**2" not in score and "s**2" in score  # not −(−2m + 2x0)/(2s²)
    tex = BANANA.derive().to_latex()
    assert r"2 x_{0} - 2 m" not in tex


def test_large_expressions_are_left_alone_quickly():
    x = sp.symbols("x0:40")
    big = sp.Add(*[sp.exp(a * b) for a, b in itertools.pairwise(x)]) ** 2
    start = time.perf_counter()
    assert readable(big) is big
    assert time.perf_counter() - start < 2


def test_str_is_the_text_of_symsm_derive(capsys):
    assert main(["derive", "student_t_2d"]) == 0
    assert capsys.readouterr().out == str(symsm.load_model("student_t_2d").derive()) + "\n"
    assert repr(BANANA.derive()).startswith("Derivation(model='banana'")


def test_pretty_aligns_multiline_formulas(capsys):
    assert main(["derive", "student_t_2d", "--pretty", "--no-gradient"]) == 0
    lines = capsys.readouterr().out.splitlines()
    label = "  ∂/∂x0 log f = "
    at = next(i for i, line in enumerate(lines) if line.startswith(label))
    assert lines[at][len(label)] == "─"  # the label sits on the fraction bar
    for line in (lines[at - 1], lines[at + 1], lines[at + 2]):  # numerator and denominator in its column
        assert line.startswith(" " * len(label)) and line.strip()
