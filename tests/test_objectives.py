"""symsm.derive.objectives: the objective extension point, with auxiliary per-row inputs drawn on the host."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import sympy as sp
from models import CASES, central_difference_gradient

from symsm.derive.objectives import OBJECTIVES, Exact, Objective, make_objective


@dataclass(frozen=True)
class ScoreNoise(Objective):
    """A test objective: the exact integrand plus u·∂₀ log f with u ~ N(0, 1) drawn per row (same mean)."""

    name = "score_noise_test"
    scale: float = 1.0

    def options(self):
        return {"scale": self.scale}

    def aux_symbols(self, model):
        return (sp.Symbol("u_aux", real=True),)

    def draw(self, model, n, seed):
        return self.scale * np.random.default_rng(seed).standard_normal((n, 1))

    def integrand(self, mg):
        g = mg.graph
        return g.add(Exact().integrand(mg), g.mul(mg.aux[0], mg.score[0]))


def test_make_objective():
    assert isinstance(make_objective(), Exact) and make_objective().exact
    assert make_objective(Exact()) == Exact()
    with pytest.raises(ValueError, match="objective must be one of"):
        make_objective("no-such")
    with pytest.raises(TypeError, match="options"):
        make_objective(Exact(), n_directions=3)
    assert "exact" in OBJECTIVES


def test_auxiliary_inputs_reach_the_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    case = CASES["student_t"]()
    objective = ScoreNoise(scale=0.5)
    loss = case.model.compile(objective=objective, seed=3)
    assert loss.objective == "score_noise_test" and loss.seed == 3
    u = objective.draw(case.model, case.X.shape[0], 3)[:, 0]

    def reference(theta):
        return float(np.mean(case.integrand(theta, case.X) + u * case.score(theta, case.X)[:, 0]))

    value, grad = loss.value_and_grad(case.theta, case.X)
    assert value == pytest.approx(reference(case.theta), rel=1e-10)
    np.testing.assert_allclose(grad, central_difference_gradient(reference, case.theta), rtol=1e-6, atol=1e-8)
    assert loss.score(case.theta, case.X).shape == case.X.shape
    # the draws stay fixed until resampled; a new seed gives a new objective, no recompilation
    assert loss.value(case.theta, case.X) == value
    loss.resample(4)
    assert loss.value(case.theta, case.X) != pytest.approx(value, rel=1e-12)
    assert case.model.compile(objective=objective, seed=4).key == loss.key
