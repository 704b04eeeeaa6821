"""The derivation step of the objective variants as LaTeX (symsm.latex.objective_latex,
templates/objective_variant.tex.j2).

What is checked: the statements each variant needs (Hutchinson's identity, g(t) = log f(x + tv) with g′(0) and
g″(0), the sliced and variance-reduced objectives; x̃ = x + σε, the denoising objective and its O(σ²) bias), the
model-specific pieces (g′(0) written out with the model's own directions v_i and score; the score at x̃ equal to
the score of the exact derivation with every coordinate replaced by its noisy one), the options shown (M, the
direction distribution, σ, K), letters that avoid the model's symbols, clear errors, and — with the real
pdflatex, skipped with the reason when it is not installed — that full documents compile without overfull lines.
"""

from __future__ import annotations

import re

import pytest
import sympy as sp
from models import CASES, gaussian_full, ica_logcosh, polynomial_exp_family, student_t

import symsm
from symsm.derive.objectives import Denoising, Sliced
from symsm.latex import compile_pdf, derivation_latex, objective_latex

needs_pdflatex = pytest.mark.pdflatex  # skipped without pdflatex, failed in CI (tests/conftest.py, tests/required.py)


@pytest.fixture(scope="module")
def derivations():
    """Derivations shared by the tests (sympy's derivation is the slow part)."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = CASES[name]().model.derive()
        return cache[name]

    return get


def _align_lines(text: str, after: str) -> list[str]:
    """The lines of the first align* environment that follows the text `after`."""
    start = text.index(r"\begin{align*}", text.index(after))
    end = text.index(r"\end{align*}", start)
    return [ln.strip() for ln in text[start:end].splitlines()[1:]]


def _joined(lines) -> str:
    """The rows of an align* as one string without the line breaks and alignment marks."""
    text = " ".join(lines).replace(r"\\", " ").replace(r"&\qquad {}", " ").replace("&", "")
    return " ".join(text.split())


def test_sliced_states_the_identity_and_writes_out_the_directional_derivatives(derivations):
    der = derivations("student_t")
    text = objective_latex(der, "sliced", n_directions=2)
    assert "Hutchinson" in text
    assert r"\mathrm{E}\bigl[v^{\top} H v\bigr]" in text and r"\operatorname{tr} H" in text
    assert r"g(t) = \log f(x + t\, v;\theta)" in text
    assert r"g'(0) = v^{\top} s_{\theta}(x)" in text
    assert r"g''(0) = v^{\top} \nabla_{x}^{2} \log f(x;\theta)\, v" in text
    assert r"\tilde{J}_{\mathrm{SSM}}" in text and "SSM\\text{-}VR" not in text and "DSM" not in text
    assert "$M = 2$" in text and "Rademacher" in text and "default\\_rng(seed)" in text
    # g′(0) for this model: each direction component times that component of the score, written out
    first = " ".join(_align_lines(text, "For this model,"))
    assert first.startswith("g'(0) &=") and "v_{0}" in first and "v_{1}" in first
    assert r"\left(\nu + 2\right)" in first  # the Student-t score's factor (ν + d)
    # g″(0) for a small model too, with the mixed term 2 v_0 v_1 ∂_0∂_1 log f
    second = " ".join(_align_lines(text, "and\n\\begin{align*}"))
    assert second.startswith("g''(0) &=") and "v_{0} v_{1}" in second and "v_{0}^{2}" in second
    assert "forward-mode" in text and "Hessian-vector product" in text


def test_sliced_options_and_variance_reduction_are_shown(derivations):
    der = derivations("gaussian_full")
    gaussian = objective_latex(der, Sliced(directions="gaussian", n_directions=5))
    assert "standard normal" in gaussian and "Rademacher" not in gaussian and "$M = 5$" in gaussian
    vr = objective_latex(der, "sliced_vr")
    assert "with variance reduction" in vr and r"\tilde{J}_{\mathrm{SSM\text{-}VR}}" in vr and "$M = 1$" in vr
    assert r"\frac{1}{2}\|s_{\theta}(x^{(t)})\|^{2}" in vr
    assert r"\sum_{i=0}^{2} \sum_{j=0}^{2} v_{i} v_{j}" in vr  # the double sum runs over the model's indices


def test_denoising_shows_the_score_at_the_noisy_point_for_the_model(derivations):
    der = derivations("gaussian_full")
    text = objective_latex(der, "denoising", noise_scale=0.3, n_directions=2)
    assert r"\tilde{x} = x + \sigma \varepsilon" in text and r"\sigma = 0.3" in text and "$K = 2$" in text
    assert r"\frac{\tilde{x} - x}{\sigma^{2}}" in text and r"\tilde{J}_{\mathrm{DSM}}" in text
    assert r"O(\sigma^{2})" in text and r"S + \sigma^{2} I" in text and r"1/(N\sigma^{2})" in text
    assert "Hutchinson" not in text
    # the score at x̃: the exact derivation's score components with every x_k replaced by x̃_k (line breaks aside)
    exact = derivation_latex(der)
    rows = _align_lines(exact, "component by component")
    expected = _joined(
        re.sub(r"x_\{(\d)\}", r"\\tilde{x}_{\1}", ln).replace("(x) &=", r"(\tilde{x}) &=") for ln in rows
    )
    assert _joined(_align_lines(text, r"replaced by $\tilde{x}$")) == expected
    assert expected.count(r"\tilde{x}_{") == 9
    assert r"\varepsilon_{i}" in text


def test_small_noise_scales_print_as_powers_of_ten(derivations):
    text = objective_latex(derivations("student_t"), Denoising(noise_scale=2.5e-5))
    assert r"\sigma = 2.5 \cdot 10^{-5}" in text


def test_letters_avoid_the_models_symbols():
    x, v, eps = sp.symbols("x v varepsilon", real=True)
    model = symsm.Model(-((x - v) ** 2) / 2 - eps * x**4, [x], [v, eps], name="uses_v")
    sliced = objective_latex(model, "sliced")
    # v is a parameter and u names abbreviations: the directions are w
    assert r"g'(0) = w^{\top} s_{\theta}(x)" in sliced and r"v^{\top}" not in sliced
    noisy = objective_latex(model, "denoising", noise_scale=0.5)
    assert r"\tilde{x} = x + \sigma \eta" in noisy


def test_large_models_are_shortened_with_a_note():
    der = ica_logcosh(6).model.derive()
    text = objective_latex(der, "sliced", n_directions=3)
    assert r"g''(0)$ has up to $d^{2} = 36$ terms" in text
    assert "components of the score are shown" in text


def test_exponential_families_are_said_to_stay_quadratic(derivations):
    text = objective_latex(derivations("polynomial_exp_family"), "sliced")
    assert "exactly quadratic" in text and "closed form" in text
    assert "exactly quadratic" not in objective_latex(derivations("student_t"), "sliced")


def test_headers_and_full_documents(derivations):
    der = derivations("student_t")
    fragment = objective_latex(der, "denoising", noise_scale=0.2)
    assert not fragment.startswith("%") and r"\documentclass" not in fragment
    doc = objective_latex(der, "denoising", True, noise_scale=0.2)
    assert doc.startswith("% generated by symsm") and f"% model-hash: {der.model.hash}" in doc
    assert "% objective: denoising {'noise_scale': 0.2, 'n_directions': 1}" in doc
    assert r"\documentclass" in doc and doc.rstrip().endswith(r"\end{document}")
    assert r"\title{sliced vr score matching for the model student\_t\_2}" in objective_latex(der, "sliced_vr", True)


def test_bad_arguments_are_refused(derivations):
    der = derivations("student_t")
    with pytest.raises(ValueError, match=r"not 'exact'.*derivation_latex"):
        objective_latex(der, "exact")
    with pytest.raises(ValueError, match="n_directions must be an integer"):
        objective_latex(der, "sliced", n_directions=0)
    with pytest.raises(ValueError, match="objective must be one of"):
        objective_latex(der, "slice")
    with pytest.raises(TypeError, match="derivation must be a Derivation or a Model"):
        objective_latex("x**2", "sliced")
    with pytest.raises(ValueError, match="line_width must be an integer"):
        objective_latex(der, "sliced", line_width=5)
    x, a = sp.symbols("x a", real=True)
    half = symsm.Model(-a * x - x**2 / 2, [x], [a], domain="nonnegative", name="half_gaussian")
    with pytest.raises(ValueError, match="objective 'denoising' supports the domains"):
        objective_latex(half, "denoising")


PDF_CASES = {
    "student_t-sliced": (student_t, Sliced(n_directions=2)),
    "gaussian_full-sliced_vr": (gaussian_full, "sliced_vr"),
    "ica-denoising": (ica_logcosh, Denoising(noise_scale=0.3)),
    "polynomial-sliced": (polynomial_exp_family, Sliced(directions="gaussian")),
}


@needs_pdflatex
@pytest.mark.parametrize("name", sorted(PDF_CASES))
def test_full_documents_compile_with_pdflatex(name, tmp_path):
    make, objective = PDF_CASES[name]
    tex = tmp_path / f"{name}.tex"
    tex.write_text(objective_latex(make().model, objective, True), encoding="utf-8")
    pdf = compile_pdf(tex, keep_log=True)
    assert pdf.read_bytes().startswith(b"%PDF")
    log = tex.with_suffix(".log").read_text(errors="replace")
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \((\S+)pt too wide\)", log)]
    assert all(w < 10 for w in overfull), overfull
    pages = int(re.search(r"Output written on .* \((\d+) pages?", log).group(1))
    assert 1 <= pages <= 6
