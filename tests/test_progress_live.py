"""Progress of long operations (symsm/core/progress.py): a fit's iterations with verbose=True, a live line on
a terminal for long stages and fits, and nothing in logs or pipes unless asked."""

from __future__ import annotations

import io
import time

import numpy as np
import sympy as sp

import symsm
from symsm.cli.main import main
from symsm.core.progress import IterationProgress, Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _model() -> symsm.Model:
    x, m = sp.Symbol("x"), sp.Symbol("m")
    s = sp.Symbol("s", positive=True)
    return symsm.Model(-sp.log(1 + (x - m) ** 2 / s**2), [x], [m, s], name="cauchy_progress")


def test_fit_verbose_reports_iterations_and_is_silent_otherwise(capsys):
    X = np.random.default_rng(0).standard_cauchy((500, 1)) + 1.0
    loss = _model().compile()
    capsys.readouterr()
    res = symsm.fit(loss, X)
    assert capsys.readouterr().err == ""  # not a terminal, not asked: nothing
    res_v = symsm.fit(loss, X, verbose=True)
    err = capsys.readouterr().err
    assert "L-BFGS-B: iteration 1, J̃ = " in err and "|∇J̃| = " in err and "Newton decrement" in err
    np.testing.assert_array_equal(res.theta, res_v.theta)


def test_live_line_on_a_terminal_only_after_the_delay():
    out = _Terminal()
    live = IterationProgress(stream=out, delay=0.0)
    assert live.enabled and not live.verbose
    live.update("L-BFGS-B", 3, -1.25, 0.5)
    live.close()
    text = out.getvalue()
    assert text.startswith("\r[symsm") and "iteration 3, J̃ = -1.25, |∇J̃| = 0.5" in text and text.endswith("\n")
    quiet = IterationProgress(stream=io.StringIO(), delay=0.0)
    quiet.update("L-BFGS-B", 1, 0.0, 0.0)
    assert not quiet.enabled and quiet.stream.getvalue() == ""  # type: ignore[union-attr]


def test_long_stage_is_announced_on_a_terminal():
    out = _Terminal()
    progress = Progress(stream=out, delay=0.05)
    with progress.stage("quick"):
        pass
    with progress.stage("slow compile"):
        time.sleep(0.3)
    text = out.getvalue()
    assert "quick" not in text
    assert "slow compile ... (running for" in text and "slow compile done in" in text
    piped = io.StringIO()
    with Progress(stream=piped, delay=0.0).stage("slow compile"):
        time.sleep(0.05)
    assert piped.getvalue() == ""


def test_cli_fit_verbose_reports_the_optimisation(capsys, tmp_path):
    X = np.random.default_rng(1).multivariate_normal([0, 1], [[1, 0.3], [0.3, 2]], size=400)
    np.save(tmp_path / "X.npy", X)
    assert main(["fit", "student_t_2d", "--data", str(tmp_path / "X.npy"), "--verbose"]) == 0
    err = capsys.readouterr().err
    assert "cache lookup or generation" in err and "L-BFGS-B: iteration 1" in err
