"""Long derivations report their stages on request and stop cleanly on Ctrl-C (nothing partial is cached)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import sympy as sp

import symsm


def test_verbose_reports_each_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    x, a = sp.symbols("x a", real=True)
    symsm.Model(a * x - sp.cosh(x), [x], [a], name="progress_probe").compile(verbose=True)
    err = capsys.readouterr().err
    for stage in ("cache lookup or generation ...", "derivation and kernel IR", "code generation (llvm)", "done in"):
        assert stage in err
    symsm.Model(a * x - sp.cosh(x), [x], [a], name="progress_probe").compile()
    assert capsys.readouterr().err == ""  # silent unless asked


SLOW = textwrap.dedent(
    """
    import signal
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the test runner itself was started with
    # SIGINT ignored (a background job): the child would inherit SIG_IGN and never see the signal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import sympy as sp, symsm
    d = 26
    x = sp.symbols(f"x0:{d}", real=True); W = symsm.matrix("W", d, d); y = W * sp.Matrix(x)
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), x, {"W": W}, name="interrupted")
    model.compile(verbose=True)
    print("FINISHED")
    """
)


@pytest.mark.slow
def test_interrupted_derivation_leaves_nothing_behind(tmp_path):
    env = {**os.environ, "SYMSM_CACHE_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    seen = ""
    deadline = time.time() + 300
    while "derivation and kernel IR" not in seen and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "derivation and kernel IR" in seen, seen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "FINISHED" not in out
    assert "KeyboardInterrupt" in err or "interrupted" in err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(("symsm_", ".symsm_"))]
    assert leftovers == []  # no module and no temporary file: the next process starts clean
