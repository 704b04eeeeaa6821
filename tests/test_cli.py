"""The console script, run for real in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

import symsm


def run(*args: str, **kw):
    exe = shutil.which("symsm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "symsm.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **kw.pop("env", {})}, **kw)


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"symsm {symsm.__version__}"


@pytest.mark.slow
def test_demo_derives_compiles_and_evaluates(tmp_path):
    out = run("demo", "--n", "5000", "--repeat", "3", env={"SYMSM_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "∂0 log f" in text and "∂1² log f" in text
    path = re.search(r"generated source \((\w+)\): (\S+)", text)
    assert path and path.group(1) == "generated" and os.path.isfile(path.group(2))
    value = float(re.search(r"J̃\(θ₀\) = (\S+)", text).group(1))
    from symsm.demo import demo_data, demo_model

    model = demo_model()
    loss = model.compile()
    assert value == pytest.approx(loss.value(model.default_theta(), demo_data(5000)), rel=1e-9)
    assert "steady value_and_grad" in text


def test_usage_error_exit_status():
    out = run("no-such-command")
    assert out.returncode == 2 and "invalid choice" in out.stderr
