"""The model and embedded data of `symsm demo`: a bivariate Student-t with free location, scale and ν."""

from __future__ import annotations

import numpy as np

from ..model.model import Model

TRUE_THETA = {"m0": 0.5, "m1": -1.0, "s": 1.5, "nu": 5.0}


def demo_model() -> Model:
    return Model.from_string(
        "-(nu + 2)/2 * log(1 + ((x0 - m0)**2 + (x1 - m1)**2) / (nu * s**2))",
        data="x0 x1",
        params="m0 m1 s nu",
        positive="s nu",
        name="student_t_2d",
        description="bivariate Student-t with free location, scale and degrees of freedom",
        init={"s": 1.0, "nu": 3.0},
    )


def demo_data(n: int = 200_000, seed: int = 20050101) -> np.ndarray:
    """n samples from the bivariate t with TRUE_THETA (a seeded draw, the same on every machine)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    w = rng.chisquare(TRUE_THETA["nu"], size=(n, 1)) / TRUE_THETA["nu"]
    return np.array([TRUE_THETA["m0"], TRUE_THETA["m1"]]) + TRUE_THETA["s"] * z / np.sqrt(w)
