"""The LaTeX derivation (the symsm.latex package, templates/derivation.tex.j2).

What is checked, and against what:

* symbol names and term order against hand-written LaTeX;
* the general terms (``s_{θ,i}`` for every i) and the displayed gradient numerically against the
  hand-derived numpy references of tests/models.py (sums expanded by sympy's own ``doit``, not by the
  code under test), and the refusal to invent a general term where the components follow no pattern;
* the whole text of two small models against golden files in tests/golden/ — to regenerate them on
  purpose after an intended change, run ``SYMSM_UPDATE_GOLDEN=1 python -m pytest tests/test_latex.py``
  and review the diff;
* on the non-negative orthant (``domain="nonnegative"``): the weighted Fisher divergence, the boundary conditions
  at 0⁺ and ∞ for every coordinate, the weighted objective, and the displayed gradient against finite
  differences of the hand-written weighted integrand of tests/domain_models.py;
* the full documents of several models with the real pdflatex (skipped, with the reason, when pdflatex
  is not installed; .ci/run installs it): they compile, use amsmath only, and no line overflows the page.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from domain_models import WEIGHTS, nonnegative_ggm, truncated_normal
from models import CASES, central_difference_gradient, gaussian_full, ica_logcosh, student_t

import symsm
from symsm.latex import (
    LatexError,
    SymsmLatexPrinter,
    compile_pdf,
    derivation_latex,
    latex_symbol_name,
    model_latex,
    write_latex,
)
from symsm.latex.derivation import _Builder
from symsm.latex.layout import _Options
from symsm.latex.printer import _make_printer

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("SYMSM_UPDATE_GOLDEN") == "1"
needs_pdflatex = pytest.mark.pdflatex  # skipped without pdflatex, failed in CI (tests/conftest.py, tests/required.py)


def _builder(der, **options):
    o = _Options(max_components=4, max_params=5, line_width=56, max_lines=12)
    o = _Options(**{**o.__dict__, **options})
    return _Builder(der.model, _make_printer(der.model, None), o, der)


# ------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "tex"),
    [
        ("mu0", r"\mu_{0}"),
        ("x_3", r"x_{3}"),
        ("x12", r"x_{12}"),
        ("W_0_1", r"W_{01}"),
        ("W_1_10", r"W_{1,10}"),
        ("nu", r"\nu"),
        ("sigma", r"\sigma"),
        ("Sigma", r"\Sigma"),
        ("lamda", r"\lambda"),
        ("s", "s"),
        ("mean", r"\mathit{mean}"),
        ("sigma2", r"\sigma_{2}"),
    ],
)
def test_symbol_names_as_mathematicians_write_them(name, tex):
    assert latex_symbol_name(name) == tex
    assert SymsmLatexPrinter().doprint(sp.Symbol(name)) == tex


def test_index_separator_and_symbol_names_setting():
    assert latex_symbol_name("W_0_1", index_separator=",") == "W_{0,1}"
    p = SymsmLatexPrinter({"symbol_names": {sp.Symbol("lam"): r"\lambda"}})
    assert p.doprint(sp.Symbol("lam") * sp.Symbol("x0")) == r"\lambda x_{0}"


def test_terms_with_a_plus_sign_come_first():
    x0, mu0 = sp.symbols("x0 mu0")
    assert SymsmLatexPrinter().doprint(x0 - mu0) == r"x_{0} - \mu_{0}"
    assert SymsmLatexPrinter().doprint(-((x0 - mu0) ** 2) / 2) == r"- \frac{\left(x_{0} - \mu_{0}\right)^{2}}{2}"


def test_symbol_names_option_is_used_and_checked():
    der = CASES["gaussian_normalised"]().model.derive()
    text = derivation_latex(der, symbol_names={"sigma": r"\varsigma"})
    assert r"- \frac{x - \mu}{\varsigma^{2}}" in text and r"\sigma" not in text
    with pytest.raises(ValueError, match="symbol_names: 'zz'"):
        derivation_latex(der, symbol_names={"zz": "z"})


# ------------------------------------------------------------------------------------------- options


def test_options_are_validated():
    der = CASES["gaussian_normalised"]().model.derive()
    with pytest.raises(ValueError, match="max_components"):
        derivation_latex(der, max_components=0)
    with pytest.raises(ValueError, match="line_width"):
        derivation_latex(der, line_width=5)
    with pytest.raises(TypeError, match="colour"):
        derivation_latex(der, colour="red")
    with pytest.raises(TypeError, match="Derivation"):
        derivation_latex(der.model)


def test_unsupported_domain_is_refused():
    model = CASES["gaussian_normalised"]().model
    model.domain = "interval"  # a domain whose boundary condition the derivation does not state
    with pytest.raises(LatexError, match="interval"):
        model.derive().to_latex()


# ------------------------------------------------------------------------------------------- the steps


def test_every_step_is_instantiated(case):
    der = case.model.derive()
    text = der.to_latex()
    for step in range(6):
        assert f"Step {step}:" in text
    # Step 0: the model's own symbols; Step 1/4: one row per coordinate; Step 4: its boundary condition
    d = case.model.dim
    for p in case.model.params:
        assert SymsmLatexPrinter().doprint(p) in text
    assert text.count(r"\lim_{|") == d
    assert r"\boxed{\tilde{J}(\theta)" in text
    # the general formula, then ∂ℓ/∂θ_k for (up to max_params = 5) parameters
    assert text.count(r"\frac{\partial \ell}{\partial ") == 1 + min(case.model.n_params, 5)
    assert "\\end{align*}" in text and text.count("\\begin{align*}") == text.count("\\end{align*}")


def test_terms_free_of_the_data_are_said_to_drop_out():
    text = CASES["gaussian_normalised"]().model.derive().to_latex()
    assert r"Likewise the terms $- \log{\left(\sigma \right)} - \frac{\log{\left(2 \pi \right)}}{2}$" in text
    assert "Likewise" not in CASES["student_t"]().model.derive().to_latex()


def test_fragment_is_mathjax_friendly_and_full_document_uses_amsmath_only():
    der = CASES["student_t"]().model.derive()
    fragment = der.to_latex()
    assert der._repr_latex_() == fragment
    # a notebook's MathJax renders display environments and $...$ only: no sectioning, comments, ties
    assert not re.search(r"\\(sub)*section|\\emph|\\textbf|\\documentclass|^%|~", fragment, re.M)
    full = der.to_latex(full_document=True)
    assert full.startswith("% generated by symsm")
    assert f"% model-hash: {der.model.hash}" in full
    assert re.findall(r"\\usepackage(?:\[[^]]*\])?\{([^}]*)\}", full) == ["amsmath"]
    assert full.rstrip().endswith(r"\end{document}")
    assert der.to_latex(header=True).startswith("% generated by symsm")


def test_model_repr_latex():
    model = CASES["student_t"]().model
    tex = model._repr_latex_()
    assert tex.startswith("$$\\begin{aligned}") and tex.endswith("\\end{aligned}$$")
    assert r"\nu s^{2}" in tex and r"\log f(x;\theta)" in tex
    with pytest.raises(TypeError, match="bogus"):
        model_latex(model, bogus=1)


# ------------------------------------------------------------------------------------------- general terms


def _unrolled(expr: sp.Expr, builder) -> sp.Expr:
    """Sums expanded by sympy's doit and indexed entries mapped back to the model's symbols."""
    expr = expr.doit()
    mapping = {}
    for item in expr.atoms(sp.Indexed):
        key = (item.base.label.name, tuple(int(i) for i in item.indices))
        sym = builder.indexing.backward.get(key) or builder.indexing.backward.get((key[0], key[1][::-1]))
        assert sym is not None, item
        mapping[item] = sym
    return expr.xreplace(mapping)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: ica_logcosh(4), lambda: student_t(3), lambda: gaussian_full(3)])
def test_general_terms_match_the_numpy_references(make):
    case = make()
    der = case.model.derive()
    b = _builder(der)
    b.context()
    assert set(b.general) == {"score", "hessian"}
    x, theta = case.X[:25], case.theta
    want_s, want_h = case.score(theta, x), case.hessian_diag(theta, x)
    symbols = [*case.model.data, *case.model.params]
    for i in range(case.model.dim):
        for key, want in (("score", want_s), ("hessian", want_h)):
            expr = _unrolled(b.general[key].xreplace({b.index: i}), b)
            f = sp.lambdify(symbols, expr, "numpy")
            got = f(*x.T, *theta)
            np.testing.assert_allclose(np.broadcast_to(got, (len(x),)), want[:, i], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_ica_general_terms_as_written_by_hand():
    text = derivation_latex(ica_logcosh(5).model.derive(), max_components=3)
    assert (
        r"s_{\theta,i}(x) &= - \sum\nolimits_{k=0}^{4} W_{ki} \tanh{\left(\sum\nolimits_{j=0}^{4} W_{kj} x_{j} \right)}"
        in text
    )
    assert (
        r"\frac{\partial s_{\theta,i}}{\partial x_{i}} &= - \sum\nolimits_{k=0}^{4} W_{ki}^{2} "
        r"\left(1 - \tanh^{2}{\left(\sum\nolimits_{j=0}^{4} W_{kj} x_{j} \right)}\right)" in text
    )
    assert r"\log f(x;\theta) &= - \sum\nolimits_{k=0}^{4} \log{\left(\cosh{\left(\sum\nolimits_{j=0}^{4}" in text


def test_no_general_term_where_the_components_follow_no_pattern():
    x = sp.symbols("x0:3", real=True)
    a = sp.Symbol("a", real=True)
    # the first two components look alike (−2a x_i), the third does not: a pattern from two is not enough
    model = symsm.Model(-a * (x[0] ** 2 + x[1] ** 2) - a * x[2] ** 4, x, [a], name="no_pattern")
    text = model.derive().to_latex()
    assert "In general" not in text
    b = _builder(model.derive())
    b.context()
    assert b.general == {}


@pytest.mark.slow
def test_large_d_shows_the_general_term_and_a_few_components():
    der = ica_logcosh(6).model.derive()
    text = derivation_latex(der, max_components=3)
    assert "In general, for $i = 0, \\dots, 5$" in text
    assert "3 of the 6 components of the score are shown after the general term" in text
    assert r"s_{\theta,0}(x) &=" in text and r"s_{\theta,5}(x) &=" in text
    assert r"s_{\theta,2}(x) &=" not in text and r"\vdots" in text
    assert "The gradient is shown for 5 of the $P = 36$ parameters" in text
    # the page count does not grow with d: a bounded text
    assert len(text.splitlines()) < 250


# ------------------------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("name", ["student_t", "gaussian_mixture", "smooth_functions"])
def test_displayed_gradient_matches_finite_differences_of_the_reference(name):
    case = CASES[name]()
    der = case.model.derive()
    b = _builder(der, max_params=case.model.n_params)
    x = case.X[:20]
    symbols = [*case.model.data, *case.model.params]
    for p, _chain, full in b.gradient_parts():
        k = case.model.params.index(p)
        f = sp.lambdify(symbols, full, "numpy")
        got = np.broadcast_to(f(*x.T, *case.theta), (len(x),))
        for row in range(len(x)):

            def ell(theta, row=row):
                return float(case.integrand(theta, x[row : row + 1])[0])

            want = central_difference_gradient(ell, case.theta)[k]
            assert got[row] == pytest.approx(want, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------------- layout


def test_long_expressions_are_broken_across_lines():
    x = sp.symbols("x0:2", real=True)
    c = sp.symbols("c0:12", real=True)
    log_f = sum(c[k] * x[0] ** (k + 1) * x[1] for k in range(12)) - x[0] ** 14 - x[1] ** 2
    model = symsm.Model(log_f, x, list(c), name="long_polynomial")
    text = model.derive().to_latex(line_width=40)
    block = text.split(r"\log f(x;\theta) &=")[1].split(r"\end{align*}")[0]
    assert block.count(r"\\") >= 2  # at least three lines
    assert block.count(r"&\qquad {}+") + block.count(r"&\qquad {}-") >= 2


def test_very_long_expressions_are_shortened_visibly():
    der = CASES["student_t"]().model.derive()
    text = derivation_latex(der, max_lines=2, line_width=30)
    assert r"\text{(shortened)}" in text
    assert "the generated code uses them in full" in text


# ------------------------------------------------------------------------------------------- domain [0, ∞)^d


def test_nonnegative_domain_states_the_weighted_objective_and_the_boundary_conditions():
    text = truncated_normal("t2").model.derive().to_latex()
    plain = truncated_normal("t2", domain="real").model.derive().to_latex()
    assert r"$x \in [0, \infty)$" in text and r"$x \in \mathbf{R}$" in plain
    assert r"Z(\theta) = \int_{[0, \infty)} f(x;\theta)" in text
    # Step 2: the weight, written out with its derivative, in the weighted Fisher divergence
    assert "h(x) &= x^{2} \\\\\nh'(x) &= 2 x" in text
    assert r"J(\theta) = \frac{1}{2} \int p_{D}(x)  h(x) \Bigl(\frac{\partial \log p_{D}(x)}{\partial x}" in text
    assert "Generalized score matching" in text and "Generalized score matching" not in plain
    assert "The distance between the two scores is the Fisher divergence" not in text
    # Step 4: integration by parts over [0, ∞), the boundary term at 0 and ∞, one condition at each end
    assert r"\Bigl[p_{D}(x)\, h(x)\, s_{\theta}(x)\Bigr]_{x=0}^{x=\infty}" in text
    score = r"\Bigl(- \frac{x - \mu}{\sigma^{2}}\Bigr)"
    assert rf"\lim_{{x \to 0^{{+}}}} p_{{D}}(x)\, h(x)\, {score} &= 0" in text
    assert rf"\lim_{{x \to \infty}} p_{{D}}(x)\, h(x)\, {score} &= 0" in text
    assert r"\lim_{|" not in text and plain.count(r"\lim_{|") == 1  # R's |x| → ∞ only on R
    # Step 5: the weighted objective in the box, and this model's integrand
    box = text.split(r"\boxed{")[1].split(r"\end{equation*}")[0]
    assert r"h(x)\, \frac{\partial^{2} \log f(x;\theta)}{\partial x^{2}}" in box
    assert r"+ h'(x)\, \frac{\partial \log f(x;\theta)}{\partial x}\Bigr]" in box
    assert (
        r"\ell(x;\theta) &= \frac{x^{2} \left(x - \mu\right)^{2}}{2 \sigma^{4}} - \frac{x^{2}}{\sigma^{2}} "
        r"- \frac{2 x \left(x - \mu\right)}{\sigma^{2}}" in text
    )
    assert r"\bigl(h(x)\, s_{\theta} + h'(x)\bigr)" in text  # the weighted chain rule of ∂ℓ/∂θ_k


def test_nonnegative_domain_with_d_coordinates_states_a_condition_at_each_end_of_each():
    case = nonnegative_ggm("t2_bounded")
    text = case.model.derive().to_latex()
    assert r"$x = (x_{0}$, $x_{1}$, $x_{2}) \in [0, \infty)^{3}$" in text
    assert r"h(x_{i}) &= \frac{x_{i}^{2}}{x_{i}^{2} + 1}" in text  # the weight at the general coordinate
    assert r"\sum_{i=0}^{2} h(x_{i}) \Bigl(\frac{\partial \log p_{D}(x)}{\partial x_{i}}" in text
    assert (
        r"\int \Bigl[p_{D}(x)\, h(x_{i})\, s_{\theta,i}(x)\Bigr]_{x_{i}=0}^{x_{i}=\infty} \prod_{j \ne i} dx_{j}"
        in text
    )
    for i in range(3):
        assert rf"\lim_{{x_{{{i}}} \to 0^{{+}}}} p_{{D}}(x)\, h(x_{{{i}}})\, s_{{\theta,{i}}}(x) &= 0" in text
        assert rf"\lim_{{x_{{{i}}} \to \infty}} p_{{D}}(x)\, h(x_{{{i}}})\, s_{{\theta,{i}}}(x) &= 0" in text
    assert text.count(r"\to 0^{+}}") == 3 and text.count(r"\to \infty}") == 3
    assert "(an exponential family)" in text  # the closed form is announced on [0, ∞)^d too


def test_weight_letter_avoids_the_models_own_symbols():
    x, h = sp.Symbol("x", real=True), sp.Symbol("h", real=True)
    model = symsm.Model(-(x**2) / 2 + h * x, [x], [h], name="uses_h", domain="nonnegative")
    text = model.derive().to_latex()
    assert "w(x) &= x^{2}" in text and r"\lim_{x \to 0^{+}} p_{D}(x)\, w(x)" in text
    assert "h(x) &=" not in text


@pytest.mark.parametrize("weight", sorted(WEIGHTS))
def test_displayed_weighted_gradient_matches_finite_differences_of_the_reference(weight):
    case = truncated_normal(weight)
    der = case.model.derive()
    b = _builder(der, max_params=case.model.n_params)
    x = case.X[:12]
    symbols = [*case.model.data, *case.model.params]
    parts = b.gradient_parts()
    assert len(parts) == case.model.n_params
    for p, _chain, full in parts:
        k = case.model.params.index(p)
        got = np.broadcast_to(sp.lambdify(symbols, full, "numpy")(*x.T, *case.theta), (len(x),))
        for row in range(len(x)):

            def ell(theta, row=row):
                return float(case.integrand(theta, x[row : row + 1])[0])

            want = central_difference_gradient(ell, case.theta)[k]
            assert got[row] == pytest.approx(want, rel=1e-6, abs=1e-8)


# ------------------------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("name", ["gaussian_normalised", "polynomial_exp_family"])
def test_golden(name):
    text = CASES[name]().model.derive().to_latex()
    path = GOLDEN / f"{name}.tex"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        pytest.skip(f"golden file {path.name} rewritten (SYMSM_UPDATE_GOLDEN=1); review the diff")
    assert path.is_file(), f"missing {path}; create it with SYMSM_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"LaTeX of {name} differs from {path}; if the change is intended, regenerate with SYMSM_UPDATE_GOLDEN=1"
    )


# ------------------------------------------------------------------------------------------- files and pdflatex


def test_write_latex_checks_its_arguments(tmp_path):
    der = CASES["gaussian_normalised"]().model.derive()
    with pytest.raises(ValueError, match=r"\.tex"):
        write_latex(der, tmp_path / "out.txt")
    with pytest.raises(ValueError, match="does not exist"):
        write_latex(der, tmp_path / "missing" / "out.tex")
    with pytest.raises(TypeError, match="Derivation or a Model"):
        write_latex("model", tmp_path / "out.tex")
    files = write_latex(der.model, tmp_path / "out.tex")  # a Model is derived first
    assert files.pdf is None and files.tex.read_text().startswith("% generated by symsm")
    assert [p.name for p in tmp_path.iterdir()] == ["out.tex"]  # no temporary file left behind


def test_missing_pdflatex_gives_a_clear_error(tmp_path, monkeypatch):
    der = CASES["gaussian_normalised"]().model.derive()
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without pdflatex
    with pytest.raises(LatexError, match=r"pdflatex was not found.*texlive-latex-base"):
        write_latex(der, tmp_path / "out.tex", pdf=True)
    assert (tmp_path / "out.tex").is_file()  # the .tex is written all the same


@needs_pdflatex
@pytest.mark.pdflatex
def test_pdflatex_error_is_reported(tmp_path):
    bad = tmp_path / "bad.tex"
    bad.write_text("\\documentclass{article}\\begin{document}\\undefinedmacro\\end{document}\n")
    with pytest.raises(LatexError, match="Undefined control sequence"):
        compile_pdf(bad)


def _pdf_models() -> dict:
    models = {name: make for name, make in CASES.items()}
    models["ica_4"] = lambda: ica_logcosh(4)
    models["truncated_normal"] = lambda: truncated_normal("one_minus_exp")  # domain [0, ∞)
    models["nonnegative_ggm"] = lambda: nonnegative_ggm("t2_bounded")  # [0, ∞)^3
    return models


PDF_MODELS = _pdf_models()


def _from_string_model() -> symsm.Model:
    return symsm.Model.from_string(
        "-(nu + 1)/2 * log(1 + (x - mu)**2 / (nu * sigma**2)) + alpha * atan(x)",
        data="x",
        params="mu sigma nu alpha",
        positive="sigma nu",
        name="t_with_skew & 100% special_chars",
        description="a Student-t with a skew term; the name tests escaping: #$_{}~^\\",
    )


@needs_pdflatex
@pytest.mark.pdflatex
@pytest.mark.slow
@pytest.mark.parametrize("name", [*PDF_MODELS, "from_string"])
def test_full_document_compiles_with_pdflatex(name, tmp_path):
    model = _from_string_model() if name == "from_string" else PDF_MODELS[name]().model
    files = write_latex(model.derive(), tmp_path / f"{name.replace(' ', '_')}.tex", pdf=True, keep_log=True)
    assert files.pdf is not None and files.pdf.read_bytes().startswith(b"%PDF")
    # no line may run off the page, and the size is bounded
    log = files.tex.with_suffix(".log").read_text(errors="replace")
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \((\S+)pt too wide\)", log)]
    assert all(w < 10 for w in overfull), overfull
    pages = int(re.search(r"Output written on .* \((\d+) pages?", log).group(1))
    assert 2 <= pages <= 8
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".log", ".pdf", ".tex"]  # no .aux left behind
