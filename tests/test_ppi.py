"""Scealy & Wood (2023), Tables 3 and 4, reproduced by symsm: the PPI model of the microbiome compositions
(tests/data/microbiome: TM7, Cyanobacteria/Chloroplast, Actinobacteria, Proteobacteria, pool; 92 rows, zeros
included) fitted by score matching on the sphere after the square-root map, with the minsq boundary weight,
a_c = 0.01 and β fixed at (−0.8, −0.85, 0, −0.2, 0) — the shipped model file ppi_5d.toml.

symsm's estimates and sandwich standard errors are compared with the published numbers (published.json, parsed
from scorematchingad's snapshots of the tables) to 6 significant digits, and with the independent numpy
reference tests/ppi_reference.py (written from the mathematics, sharing no code with symsm) to 1e-9.
"""

from __future__ import annotations

import numpy as np
from ppi_reference import fit_ppi_sqrt
from test_ppi_reference import _upper_colmajor, assert_signif, counts, published, tcap_clean  # noqa: F401

import symsm
from symsm.model.modelfile import load_model

BETA = np.array([-0.8, -0.85, 0.0, -0.2, 0.0])
# symsm's θ of ppi_5d: A's upper triangle row by row (A_0_0, A_0_1, …), then b; the paper's order is diag A,
# then A's upper triangle by column, then b
PAPER = ["A_0_0", "A_1_1", "A_2_2", "A_3_3", "A_0_1", "A_0_2", "A_1_2", "A_0_3", "A_1_3", "A_2_3"]


def _paper_order(model, values) -> np.ndarray:
    by_name = dict(zip(model.param_names, values, strict=True))
    names = PAPER + [n for n in model.param_names if n.startswith("b_")]
    return np.array([by_name[n] for n in names])


def test_table4_b_fitted(published, tcap_clean) -> None:  # noqa: F811
    table = published["table4_bL_fitted"]
    model = load_model("ppi_5d")
    res = symsm.fit(model, tcap_clean)
    assert res.method == "closed_form"
    est, se = _paper_order(model, res.theta), _paper_order(model, res.se)
    assert_signif(est, table["estimate"], 6)
    assert_signif(se, table["se"], 6)
    ref = fit_ppi_sqrt(tcap_clean, BETA, 0.01, include_bL=True, bdryw="minsq")
    np.testing.assert_allclose(est, ref.theta, rtol=1e-9)
    np.testing.assert_allclose(se, ref.se, rtol=1e-9)


def test_table3_b_zero(published, tcap_clean) -> None:  # noqa: F811
    """b_L fixed at 0: the same model without b. The paper's SEs come from the full 14 × 14 W (b rows included),
    so only the estimate is compared with Table 3; the SE of this model is compared with the reference."""
    table = published["table3_bL_zero"]
    text = (symsm.model.modelfile.resolve_model_path("ppi_5d")).read_text()
    model = load_model("ppi_5d")
    log_f = model.log_f.xreplace({p: 0 for p in model.params if str(p).startswith("b_")})
    A = next(g for g in model.groups if g.name == "A")
    no_b = symsm.Model(
        log_f, model.data, {"A": A.template}, name="ppi_5d_b0", domain="simplex", transform="sqrt",
        weight="minsq", a_c=0.01,
    )  # fmt: skip
    assert "b[0]" in text
    res = symsm.fit(no_b, tcap_clean)
    A_hat = np.zeros((4, 4))
    for name, value in zip(no_b.param_names, res.theta, strict=True):
        i, j = map(int, name.split("_")[1:])
        A_hat[i, j] = A_hat[j, i] = value
    assert_signif(_upper_colmajor(A_hat), table["AL_upper_tri_colmajor"], 6)
    ref = fit_ppi_sqrt(tcap_clean, BETA, 0.01, include_bL=False, bdryw="minsq")
    np.testing.assert_allclose(_paper_order(no_b, res.theta), ref.theta, rtol=1e-9)
    np.testing.assert_allclose(_paper_order(no_b, res.se), ref.se, rtol=1e-9)


def test_zeros_give_the_limit_of_nearby_rows(tcap_clean) -> None:  # noqa: F811
    """A row with a zero part evaluates to the limit of rows approaching it (the integrand's expanded form is
    continuous there), not to nan."""
    loss = load_model("ppi_5d").compile()
    theta = np.linspace(-3, 2, loss.model.n_params)
    row = np.array([[0.0, 0.3, 0.2, 0.1, 0.4]])
    near = row + np.array([[1e-13, 0, 0, 0, -1e-13]])
    at, close = loss.per_sample(theta, row), loss.per_sample(theta, near)
    assert np.isfinite(at).all()
    np.testing.assert_allclose(at, close, rtol=1e-6, atol=1e-9)
    grad_at, grad_close = loss.value_and_grad(theta, row)[1], loss.value_and_grad(theta, near)[1]
    np.testing.assert_allclose(grad_at, grad_close, rtol=1e-6, atol=1e-9)
    assert np.isfinite(loss.value_and_grad(theta, tcap_clean)[1]).all()
