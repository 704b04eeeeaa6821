"""symsm/runtime/dask.py on a real dask LocalCluster: 2 worker processes on 127.0.0.1, started and closed here.

The distributed results are compared with the in-memory computation (itself checked against hand-written
numpy references and finite differences in test_compiled.py / test_fit.py) and, for the value, directly with
the hand-written reference of tests/models.py. The cluster's workers share the tests' cache directory (the
in-memory call of each test runs first, so workers load numba's machine code instead of compiling it again);
one test starts a worker with an empty cache of its own and sees it write the shipped module there.

Each test computes in memory first (so workers find numba's machine code in the shared cache).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from models import CASES

import symsm
from symsm.runtime import dask as sd
from symsm.runtime.accumulate import gradient_moments
from symsm.runtime.moments import moments as in_memory_moments

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    import cloudpickle

    # The chunk functions below that kill their worker travel by value (workers need not import this file).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # One retry per task: a task whose worker dies twice fails with KilledWorker (the error test) quickly.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        )
        cl = distributed.Client(cluster)
    try:
        yield cl
    finally:
        cl.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def two_workers(client):
    client.wait_for_workers(2, timeout=180)
    return client


def _case(name: str, copies: int = 4):
    """A shared test case with more rows (copies of its data, shifted so rows differ) and its loss."""
    c = CASES[name]()
    rng = np.random.default_rng(11)
    X = np.concatenate([c.X + 0.01 * rng.standard_normal(c.X.shape) for _ in range(copies)])
    return c, c.model.compile(), X


def _chunked(X: np.ndarray, sizes: tuple[int, ...]):
    assert sum(sizes) == X.shape[0]
    return da.from_array(X, chunks=(sizes, (X.shape[1],)))


def _four_chunks(X: np.ndarray):
    n = X.shape[0]
    sizes = (n // 7, n // 2, 1, n - n // 7 - n // 2 - 1)  # unequal, one of a single row
    return _chunked(X, sizes)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ---------------------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("name", ["student_t", "gaussian_full", "ica_logcosh"])
def test_value_and_grad_on_four_chunks_equals_numpy(two_workers, name):
    case, loss, X = _case(name)
    v0, g0 = loss.value_and_grad(case.theta, X)
    Xd = _four_chunks(X)
    assert Xd.numblocks == (4, 1)
    value, grad = loss.value_and_grad(case.theta, Xd)
    assert _rel(value, v0) <= 1e-12
    assert _rel(grad, g0) <= 1e-12
    assert value == pytest.approx(case.objective(case.theta, X), rel=1e-10)  # the hand-written reference
    # the explicit form, value alone, and bit-identical repetition (chunk order fixes the summation)
    v2, g2 = sd.value_and_grad(loss, case.theta, Xd)
    assert v2 == value and np.array_equal(g2, grad)
    assert _rel(loss.value(case.theta, Xd), loss.value(case.theta, X)) <= 1e-12


def test_chunks_of_any_size_combine_exactly(two_workers):
    """Chunk means are weighted by their row counts: 1-row chunks, an empty chunk and a big one."""
    case, loss, X = _case("gaussian_full")  # degree 2 in x: big chunks use moment matching, tiny ones do not
    n = X.shape[0]
    v0, g0 = loss.value_and_grad(case.theta, X)
    Xd = _chunked(X, (1, 2, 0, 3, n - 6))
    value, grad = loss.value_and_grad(case.theta, Xd)
    assert _rel(value, v0) <= 1e-12 and _rel(grad, g0) <= 1e-12


def test_on_disk_npy_stack_and_unknown_chunk_sizes(two_workers, tmp_path):
    """The README's route (a dataset on disk, read by the workers) and chunks of unknown size (a row mask)."""
    case, loss, X = _case("student_t")
    v0, g0 = loss.value_and_grad(case.theta, X)
    da.to_npy_stack(str(tmp_path / "stack"), _four_chunks(X), axis=0)
    Xd = da.from_npy_stack(str(tmp_path / "stack"))
    assert Xd.numblocks == (4, 1)
    value, grad = loss.value_and_grad(case.theta, Xd)
    assert _rel(value, v0) <= 1e-12 and _rel(grad, g0) <= 1e-12

    keep = X[:, 0] > 0
    masked = Xd[Xd[:, 0] > 0]
    assert np.isnan(masked.shape[0])
    v1, g1 = loss.value_and_grad(case.theta, X[keep])
    value, grad = loss.value_and_grad(case.theta, masked)
    assert _rel(value, v1) <= 1e-12 and _rel(grad, g1) <= 1e-12
    rows, host = sd.fit_data(loss, masked)
    assert host.shape == (int(keep.sum()), X.shape[1]) and rows is host


def test_fitting_sums_equal_in_memory(two_workers):
    case, loss, X = _case("student_t")
    Xd = _four_chunks(X)
    m0, c0 = gradient_moments(loss, case.theta, X)
    mean, cov = gradient_moments(loss, case.theta, Xd)
    assert _rel(mean, m0) <= 1e-11 and _rel(cov, c0) <= 1e-11
    H0 = loss.hessian(case.theta, X)
    assert _rel(loss.hessian(case.theta, Xd), H0) <= 1e-11

    _, ploss, PX = _case("polynomial_exp_family")
    A0, b0, c0_ = ploss.quadratic_form(PX)
    A, b, c = ploss.quadratic_form(_four_chunks(PX))
    assert _rel(A, A0) <= 1e-12 and _rel(b, b0) <= 1e-12 and c == pytest.approx(c0_, rel=1e-12)
    assert np.array_equal(A, A.T)


def test_data_moments_combine_exactly(two_workers):
    _, loss, X = _case("gaussian_full")
    X = X + 1e3  # a mean far from zero: the combination must not cancel digits
    m0, c0 = in_memory_moments(np.ascontiguousarray(X))
    n, mean, cov = sd.moments(loss, _four_chunks(X))
    assert n == X.shape[0]
    assert _rel(mean, m0) <= 1e-14
    assert _rel(cov, c0) <= 1e-9  # rounding of the data about a mean of 1e3, not of the combination
    np.testing.assert_allclose(cov, np.cov(X.T, bias=True), rtol=1e-9)


# ---------------------------------------------------------------------------------------------- fitting
def _assert_same_fit(res, ref, rtol):
    assert res.method == ref.method and res.converged and ref.converged
    assert res.n_samples == ref.n_samples
    np.testing.assert_allclose(res.theta, ref.theta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(res.se, ref.se, rtol=max(rtol, 1e-9))
    assert res.loss == pytest.approx(ref.loss, rel=1e-12, abs=1e-12)


def test_closed_form_fit_equals_in_memory(two_workers):
    _, loss, X = _case("polynomial_exp_family")
    ref = symsm.fit(loss, X)
    res = symsm.fit(loss, _four_chunks(X))
    _assert_same_fit(res, ref, rtol=1e-11)
    assert res.method == "closed_form"


def test_closed_form_fit_of_a_gaussian_from_moments(two_workers):
    """Natural-parameter Gaussian: quadratic in θ and in x, fitted from the combined moments."""
    model = symsm.load_model("gaussian_2d")
    X = np.random.default_rng(5).multivariate_normal([1, -2], [[2, 0.6], [0.6, 1]], size=3000)
    ref = symsm.fit(model, X)
    res = symsm.fit(model, _four_chunks(X))
    _assert_same_fit(res, ref, rtol=1e-10)


def test_lbfgs_fit_equals_in_memory(two_workers):
    _, loss, X = _case("student_t")
    ref = symsm.fit(loss, X)
    res = symsm.fit(loss, _four_chunks(X))
    _assert_same_fit(res, ref, rtol=1e-9)
    assert res.method == "lbfgs" and res.n_evals > 5


def test_lbfgs_fit_quadratic_in_x_touches_the_cluster_a_few_times(two_workers):
    """Gaussian (μ, M): the optimisation runs on the 2d matching points of the combined moments; only the
    moments, the exact Hessian and V take passes over the chunks."""
    _, loss, X = _case("gaussian_full")
    ref = symsm.fit(loss, X)
    Xd = _four_chunks(X)
    with distributed.get_task_stream(client=two_workers) as ts:
        res = symsm.fit(loss, Xd)
    chunk_tasks = [t for t in ts.data if "_chunk_task" in str(t["key"])]
    passes = len(chunk_tasks) / Xd.numblocks[0]
    _assert_same_fit(res, ref, rtol=1e-9)
    assert passes <= 4 < res.n_evals


# ---------------------------------------------------------------------------------------------- workers
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")  # the scheduler's HTTP port
def test_worker_with_an_empty_cache_loads_the_shipped_module(client, tmp_path):
    """A worker whose cache directory is empty writes the shipped text there (it never derives or generates:
    the code generator is not even imported), imports it once per process, and numba caches its machine code
    next to it."""
    case, loss, X = _case("student_t")
    v0, g0 = loss.value_and_grad(case.theta, X)
    worker_cache = tmp_path / "worker-cache"
    with (
        distributed.LocalCluster(
            n_workers=1,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            env={"SYMSM_CACHE_DIR": str(worker_cache)},
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as own,
    ):
        with dask.config.set(scheduler=own.get):
            value, grad = loss.value_and_grad(case.theta, _four_chunks(X))
            loss.value_and_grad(case.theta * 1.01, _four_chunks(X))

        def state(key):
            from symsm.core import cache

            return (
                str(cache.cache_dir()),
                [e.kind for e in cache.events() if e.key == key],
                sorted(
                    m
                    for m in sys.modules
                    if m.startswith(("symsm.ir.", "symsm.derive.graph", "symsm.derive.derivation"))
                ),
            )

        ((directory, kinds, generators),) = own.run(state, loss.key).values()
    assert _rel(value, v0) <= 1e-12 and _rel(grad, g0) <= 1e-12
    assert directory == str(worker_cache)
    assert kinds == ["generated"]  # written from the shipped text once, then the per-process memo
    assert generators == []
    name = f"symsm_{loss.key[:32]}"
    assert (worker_cache / f"{name}.py").read_text(encoding="utf-8").split("\n", 1)[1] == loss.source
    # the worker compiled the kernel's machine code once and keeps it next to the module for its next process
    assert any(f.name.startswith(f"{name}.value_and_grad.") and f.suffix == ".o" for f in worker_cache.iterdir())


def test_threads_per_task_on_workers(two_workers):
    def observed():
        import numba

        return sd.threads_per_task(), sd._with_threads(numba.get_num_threads)

    env = two_workers.run(lambda: os.environ.get("NUMBA_NUM_THREADS"))
    for worker in env:  # as a task (a thread of the worker's pool), like a chunk's kernel call
        k, inside = two_workers.submit(observed, workers=[worker], pure=False).result()
        import numba

        expected = 1 if not env[worker] else max(1, min(numba.config.NUMBA_NUM_THREADS, int(env[worker])))
        assert k == expected and inside == expected  # threads_per_worker=1: one numba thread unless set
    assert sd.threads_per_task() is None  # the client's main thread: numba's own setting


def test_local_threaded_scheduler_without_cluster(client):
    case, loss, X = _case("student_t")
    v0, g0 = loss.value_and_grad(case.theta, X)
    for scheduler in ("threads", "sync"):
        with dask.config.set(scheduler=scheduler):
            value, grad = loss.value_and_grad(case.theta, _four_chunks(X))
        assert _rel(value, v0) <= 1e-12 and _rel(grad, g0) <= 1e-12


# ---------------------------------------------------------------------------------------------- errors
def test_columns_split_is_refused():
    case, loss, X = _case("student_t", copies=1)
    with pytest.raises(ValueError, match=r"chunked along its columns.*rechunk"):
        loss.value_and_grad(case.theta, da.from_array(X, chunks=(100, 1)))
    with pytest.raises(ValueError, match=r"chunked along its columns"):
        symsm.fit(loss, da.from_array(X, chunks=(100, 1)))


def test_bad_dask_input_is_refused():
    case, loss, X = _case("student_t", copies=1)
    with pytest.raises(ValueError, match=r"got 3 columns"):
        loss.value(case.theta, da.from_array(np.ones((10, 3)), chunks=(5, -1)))
    with pytest.raises(ValueError, match=r"2-D"):
        loss.value(case.theta, da.from_array(np.ones(10), chunks=5))
    with pytest.raises(ValueError, match=r"empty"):
        loss.value(case.theta, da.from_array(np.ones((0, 2)), chunks=(5, -1)))
    with pytest.raises(ValueError, match=r"real numbers"):
        loss.value(case.theta, da.from_array(np.ones((10, 2), dtype=complex), chunks=(5, -1)))
    with pytest.raises(TypeError, match=r"dask.array.Array"):
        loss.value(case.theta, dask.delayed(X))
    with pytest.raises(ValueError, match=r"theta"):
        loss.value(np.ones(3), da.from_array(X, chunks=(100, -1)))


def test_non_finite_value_names_the_chunk(two_workers):
    case, loss, X = _case("student_t", copies=1)
    X = X.copy()
    X[260, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*row 10.*chunk 2 of the dask array X \(rows 250\.\.374"):
        loss.value_and_grad(case.theta, _chunked(X, (125, 125, 125, 125)))


# ---------------------------------------------------------------------------------------------- lost workers
# (last in the file: the nannies restart the killed processes, which takes a few seconds)
def _die_in_chunk(block, folder, chunk, die_on_calls, block_info=None):
    """Identity on a block, except that the computations of chunk `chunk` numbered in `die_on_calls` (1 for
    the first) kill the worker process running them, with SIGKILL, mid-task. A bounded number of deaths: a
    worker killed while its nanny is still starting it would not be restarted, which is not under test."""
    if block_info is None or block_info[0]["chunk-location"][0] != chunk:
        return block
    calls = Path(folder) / "calls"
    with calls.open("a") as fh:
        fh.write("x")
    n = len(calls.read_text())
    if n in die_on_calls:
        (Path(folder) / f"died-{n}").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return block


def _dying(X, folder, die_on_calls):
    base = _four_chunks(X)
    return base.map_blocks(_die_in_chunk, str(folder), 2, tuple(die_on_calls), dtype=base.dtype, meta=np.empty((0, 0)))


@pytest.mark.slow
def test_worker_killed_mid_fit_is_retried(two_workers, tmp_path):
    _, loss, X = _case("student_t")
    ref = symsm.fit(loss, X)
    pids = set(two_workers.run(os.getpid).values())
    res = symsm.fit(loss, _dying(X, tmp_path, [3]))
    assert (tmp_path / "died-3").exists()  # the worker computing chunk 2 in the third pass was killed
    _assert_same_fit(res, ref, rtol=1e-9)
    two_workers.wait_for_workers(2, timeout=180)
    assert set(two_workers.run(os.getpid).values()) != pids  # the nanny replaced the killed process


@pytest.mark.slow
def test_worker_killed_again_on_the_retry_raises(two_workers, tmp_path):
    _, loss, X = _case("student_t")
    with pytest.raises(distributed.KilledWorker) as info:
        symsm.fit(loss, _dying(X, tmp_path, [2, 3]))
    assert any("no partial result was used" in note for note in getattr(info.value, "__notes__", []))
    assert sorted(f.name for f in tmp_path.glob("died-*")) == ["died-2", "died-3"]  # retried once, then final
