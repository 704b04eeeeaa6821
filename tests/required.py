"""Optional tools the suite needs somewhere: pdflatex, numba-cuda (its CUDA simulator).

Outside CI a missing tool skips the tests that need it, with the reason. In CI (the `CI` environment variable set
to anything but "", "0", "false", "no" or "off", e.g. CI=true) it fails them instead: a CI image that lost
pdflatex or numba-cuda must not turn those tests into silent skips.

Tests that need pdflatex carry the `pdflatex` marker (tests/conftest.py checks it before each such test); tests
that need numba-cuda call `require_module("numba_cuda", ...)`, which also works at module level.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")
PDFLATEX_REASON = "pdflatex not on PATH (apt-get install -y --no-install-recommends texlive-latex-base; .ci/run does)"
NUMBA_CUDA_REASON = "the CUDA backend's extra is not installed: pip install 'symsm[cuda]'"


def missing(reason: str) -> NoReturn:
    """A tool the calling test needs is missing: skip it, or in CI fail it (both allowed at module level)."""
    if IN_CI:
        pytest.fail(f"{reason} (the CI variable is set: a missing tool is a failure, not a skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def have_pdflatex() -> bool:
    return shutil.which("pdflatex") is not None


def require_pdflatex() -> None:
    if not have_pdflatex():
        missing(PDFLATEX_REASON)


def require_module(name: str, reason: str = NUMBA_CUDA_REASON) -> None:
    """`pytest.importorskip` for an optional dependency that CI must have."""
    if importlib.util.find_spec(name) is None:
        missing(reason)
