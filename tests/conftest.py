"""Shared pytest configuration.

Generated kernels go to a cache directory kept between runs (content-addressed, so never stale) unless
SYMSM_CACHE_DIR is set; tests about the cache itself use directories of their own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SYMSM_CACHE_DIR", str(ROOT / ".pytest_cache" / "symsm-kernels"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/models.py

import pytest  # noqa: E402
from models import CASES, Case  # noqa: E402


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `pdflatex` need it: skipped without it, or failed in CI (see tests/required.py)."""
    if item.get_closest_marker("pdflatex") is not None:
        from required import require_pdflatex

        require_pdflatex()


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]()


@pytest.fixture(scope="session")
def compiled_cases() -> dict:
    """Each shared case compiled once per session (numba backend, float64)."""
    out = {}
    for name, make in CASES.items():
        c = make()
        out[name] = (c, c.model.compile())
    return out
