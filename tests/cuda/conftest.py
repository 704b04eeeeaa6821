"""The CUDA tests run under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, in a pytest process of their own:
the simulator is chosen when numba is imported) or, on a machine with a GPU, on the GPU itself.

Tests marked `gpu` need a real GPU and are skipped under the simulator; everything is skipped, with the
reason, where neither is available — except in CI (the `CI` variable set), where that is a failure.
"""

from __future__ import annotations

import importlib.util

import pytest
from required import IN_CI, missing

from symsm.runtime.device import device_available, simulator_enabled


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "missing_in_ci(reason): a required tool is missing in CI: fail the test")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("missing_in_ci")
    if marker is not None:
        missing(marker.args[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("numba_cuda") is None:
        reason = "the CUDA backend's extra is not installed: pip install 'symsm[cuda]'"
    elif not device_available():
        reason = "no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set"
    else:
        reason = ""
    if reason:
        if IN_CI:  # a CI image without numba-cuda or the simulator fails these tests (tests/required.py)
            for item in items:
                item.add_marker(pytest.mark.missing_in_ci(reason))
            return
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(skip)
        return
    if simulator_enabled():
        skip_gpu = pytest.mark.skip(reason="needs a real GPU (running under the CUDA simulator)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
