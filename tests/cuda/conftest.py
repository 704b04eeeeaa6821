"""The CUDA tests run under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, in a pytest process of their own:
the simulator is chosen when numba is imported) or, on a machine with a GPU, on the GPU itself.

Tests marked `gpu` need a real GPU and are skipped under the simulator; everything is skipped, with the
reason, where neither is available.
"""

from __future__ import annotations

import importlib.util

import pytest

from symsm.runtime.device import device_available, simulator_enabled


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("numba_cuda") is None:
        reason = "the CUDA backend's extra is not installed: pip install 'symsm[cuda]'"
    elif not device_available():
        reason = "no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set"
    else:
        reason = ""
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(skip)
        return
    if simulator_enabled():
        skip_gpu = pytest.mark.skip(reason="needs a real GPU (running under the CUDA simulator)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
