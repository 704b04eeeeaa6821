"""symsm.cache: content-addressed, verified, atomic, private; reused across processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import symsm
from symsm import cache
from symsm.errors import CacheError

ROOT = Path(__file__).resolve().parents[1]

COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, sympy as sp
    import symsm
    from symsm import cache
    x = sp.Symbol("x", real=True); m = sp.Symbol("m", real=True); s = sp.Symbol("s", positive=True)
    model = symsm.Model(-(x - m)**2 / (2*s**2) - sp.log(1 + x**2) * m**2, [x], [m, s], name="cache_probe")
    loss = model.compile()
    X = np.linspace(-2, 2, 101).reshape(-1, 1)
    value, grad = loss.value_and_grad(np.array([0.3, 1.2]), X)
    stats = loss.kernels["value_and_grad"].stats
    print(json.dumps({
        "events": [e.kind for e in cache.events()],
        "path": str(loss.path),
        "value": value,
        "grad": grad.tolist(),
        "numba_cache_hits": sum(stats.cache_hits.values()),
        "numba_cache_misses": sum(stats.cache_misses.values()),
    }))
    """
)


def run_probe(cache_dir: Path) -> dict:
    env = {**os.environ, "SYMSM_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_neither_regenerates_nor_recompiles(tmp_path):
    first = run_probe(tmp_path)
    second = run_probe(tmp_path)
    assert first["events"] == ["generated"]
    assert second["events"] == ["loaded"]
    assert first["path"] == second["path"]
    assert first["numba_cache_misses"] >= 1
    assert second["numba_cache_hits"] >= 1 and second["numba_cache_misses"] == 0
    assert first["value"] == second["value"] and first["grad"] == second["grad"]
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700 or tmp_path.stat().st_uid == os.getuid()


@pytest.mark.slow
def test_corrupt_truncated_and_foreign_files_are_regenerated(tmp_path):
    reference = run_probe(tmp_path)
    path = Path(reference["path"])
    good = path.read_text()
    # corrupt one character of the body
    corrupt = good.replace("N_PARAMS = 2", "N_PARAMS = 3", 1)
    assert corrupt != good
    path.write_text(corrupt)
    again = run_probe(tmp_path)
    assert again["events"] == ["rejected", "generated"] and again["value"] == reference["value"]
    # truncated
    path.write_text(good[: len(good) // 2])
    assert run_probe(tmp_path)["events"] == ["rejected", "generated"]
    # a foreign file with a valid hash line but another key: not imported
    body = "# cache-key: " + "0" * 64 + "\nraise SystemExit('foreign code ran')\n"
    path.write_text(cache._with_hash(body))
    result = run_probe(tmp_path)
    assert result["events"] == ["rejected", "generated"] and result["value"] == reference["value"]
    assert path.read_text() == good


def test_cache_dir_is_private(tmp_path, monkeypatch):
    target = tmp_path / "fresh" / "symsm"
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    assert cache.cache_dir() == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_world_writable_cache_dir_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o777)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(target))
    with pytest.raises(CacheError, match="writable by others"):
        cache.cache_dir()


def test_key_depends_on_everything_that_shapes_the_text():
    base = dict(model=["m"], backend="numba", dtype="float64", objective="exact", options={}, version="1")
    k = cache.cache_key(**base)
    assert len(k) == 64
    for field, other in [
        ("model", ["n"]),
        ("backend", "cuda"),
        ("dtype", "float32"),
        ("objective", "sliced"),
        ("options", {"n": 1}),
        ("version", "2"),
    ]:
        assert cache.cache_key(**{**base, field: other}) != k


def test_in_process_reuse_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    import sympy as sp

    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x - x**4, [x], [a], name="memo")
    first = model.compile()
    second = model.compile()
    kinds = [e.kind for e in cache.events() if e.key == first.key]
    assert kinds[-2:] == ["generated", "memory"]
    assert first.source == second.source


def test_info_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    import sympy as sp

    x, a = sp.symbols("x a", real=True)
    symsm.Model(a * x - x**6, [x], [a], name="clear_me").compile()
    info = cache.info()
    assert info["modules"] >= 1 and info["directory"] == str(tmp_path)
    assert cache.clear() >= 1
    assert cache.info()["modules"] == 0
