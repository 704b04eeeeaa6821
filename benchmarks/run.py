"""The benchmark runner: symsm against JAX, sympy lambdify and closed forms, with the roofline.

    python -m benchmarks                 full run (N = 1e4 and 1e6, all models), writes benchmarks/RESULTS.md
    python -m benchmarks --quick         small N, four models, ~2 minutes; writes benchmarks/out/
    python -m benchmarks --models ica8,gauss32 --n 1e5

Everything that is compared is timed in this one process (the machines are noisy, so baselines are
re-measured in the same run, next to symsm). Two things need fresh processes and get them: the first call
on a warm cache (a new process finding the compiled kernels on disk) and the peak memory of one call.
RESULTS.md explains every column.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import JAX_FORMULATIONS
from .models import BenchModel, make_model, model_names

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

FULL_MODELS = "gauss2,gauss8,gauss32,ica2,ica8,ica32,student8,poly"
QUICK_MODELS = "gauss8,ica8,student8,poly"
FULL_N = "1e4,1e6"
QUICK_N = "1e4,1e5"
FIRST_CALL_ROWS = 1000  # the first call that triggers numba's compilation runs on this many rows
#: interleaved float64/float32 rounds at least: the float32 column's small-N and memory-bound calls take a few ms,
#: where a median of 5 still moved with one slow round
DTYPE_ROUNDS = 11


# ---------------------------------------------------------------------- small helpers


def _stats(times: list[float]) -> dict[str, Any]:
    a = np.asarray(times)
    return {
        "median_ms": float(np.median(a)) * 1e3,
        "min_ms": float(a.min()) * 1e3,
        "max_ms": float(a.max()) * 1e3,
        "q1_ms": float(np.percentile(a, 25)) * 1e3,
        "q3_ms": float(np.percentile(a, 75)) * 1e3,
        "n_runs": len(times),
        "runs_ms": [t * 1e3 for t in times],
    }


def time_calls(
    fn: Callable[[], Any], *, warmup: int, repeat: int, min_repeat: int, budget_s: float, initial: tuple = ()
) -> dict:
    """Median and spread of `repeat` calls after `warmup` calls; stops after `min_repeat` once `budget_s` is spent.
    `initial`: run times already measured (after warm-up), counted as runs."""
    for _ in range(warmup):
        fn()
    times: list[float] = list(initial)
    while len(times) < repeat and not (len(times) >= min_repeat and sum(times) > budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _stats(times)


def dtype_timing(calls: dict[str, Callable[[], Any]], *, repeat: int) -> dict[str, Any]:
    """Median wall and process CPU ms of each call, the calls interleaved round by round (after one warm-up
    round), and the ratios float64 / float32 of the medians."""
    for fn in calls.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeat):
        for k, fn in calls.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    out: dict[str, Any] = {"n_runs": repeat, "loadavg": _loadavg()}
    for k in calls:
        out[k] = {"wall_ms": float(np.median(wall[k])) * 1e3, "cpu_ms": float(np.median(cpu[k])) * 1e3}
    if "float64" in out and "float32" in out:
        out["wall_ratio"] = out["float64"]["wall_ms"] / out["float32"]["wall_ms"]
        out["cpu_ratio"] = out["float64"]["cpu_ms"] / out["float32"]["cpu_ms"]
    return out


def rel_diff(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> dict[str, float]:
    """Relative differences of (J, ∇J) pairs: |ΔJ|/|J_b| and max|Δ∇J| / max|∇J_b|."""
    ja, ga = a
    jb, gb = b
    ga, gb = np.asarray(ga, dtype=float), np.asarray(gb, dtype=float)
    tiny = np.finfo(float).tiny
    return {
        "value": float(abs(ja - jb) / max(abs(jb), tiny)),
        "grad": float(np.max(np.abs(ga - gb)) / max(float(np.max(np.abs(gb))), tiny)),
    }


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    import numba

    features = ""
    try:
        import llvmlite.binding as llvm

        flags = llvm.get_host_cpu_features()
        features = " ".join(f for f in ("avx2", "fma", "avx512f") if flags.get(f))
        cpu_name = llvm.get_host_cpu_name()
    except Exception:  # informational only
        cpu_name = ""
    return {
        "cpu": cpu,
        "llvm_cpu": cpu_name,
        "simd": features,
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _threading_layer() -> str:
    """numba's threading layer (known only once a parallel function has run: the read kernel has)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet chosen"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("numpy", "numba", "llvmlite", "jax", "jaxlib", "sympy", "symsm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "symsm", "templates"], cwd=ROOT, capture_output=True, text=True
        )
        if rev.returncode == 0:
            out["symsm_commit"] = rev.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return out


def _import_jax() -> tuple[Any, str]:
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        return jax, ""
    except Exception as exc:  # JAX is an optional benchmark extra
        return None, f"JAX not available ({type(exc).__name__}: {exc}); install symsm[bench]"


def _subprocess_json(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    import numba

    env = {"NUMBA_NUM_THREADS": str(numba.get_num_threads()), **env}
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.subproc", *args],
            cwd=ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- one model


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.threads:
            import numba

            numba.set_num_threads(args.threads)
            if args.threads == 1 and "XLA_FLAGS" not in os.environ:  # before JAX is imported
                os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        self.jax, self.jax_note = (None, "JAX disabled (--no-jax)") if args.no_jax else _import_jax()
        self.tmp = Path(tempfile.mkdtemp(prefix="symsm-bench-"))
        self.cache_dirs: dict[str, Path] = {}
        self.per_row: dict[str, float] = {}  # seconds per row of each baseline at the last N measured
        self._cache_env = os.environ.get("SYMSM_CACHE_DIR")

    def close(self) -> None:
        if self._cache_env is None:
            os.environ.pop("SYMSM_CACHE_DIR", None)
        else:
            os.environ["SYMSM_CACHE_DIR"] = self._cache_env
        shutil.rmtree(self.tmp, ignore_errors=True)

    def timing(self, fn: Callable[[], Any], *, warmup: int | None = None, min_repeat: int = 5) -> dict:
        a = self.args
        return time_calls(
            fn,
            warmup=a.warmup if warmup is None else warmup,
            repeat=max(a.repeat, min_repeat),
            min_repeat=min_repeat,
            budget_s=a.budget,
        )

    def baseline_timing(self, key: str, n: int, fn: Callable[[], Any]) -> dict:
        """A baseline after its first (warm-up) call: one timed call, then as many more as the budget allows —
        at least 5 when 5 fit in the budget, else at least 1 (`n_runs` says how many). Remembers the time per
        row to predict the next, larger N."""
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        fits = max(1, min(5, int(self.args.budget // max(first, 1e-9))))
        stats = time_calls(
            fn, warmup=0, repeat=self.args.repeat, min_repeat=fits, budget_s=self.args.budget, initial=(first,)
        )
        if stats["n_runs"] < 5:
            stats["note"] = (
                f"{first:.1f} s per call: {stats['n_runs']} run(s) within the {self.args.budget:.0f} s budget"
            )
        self.per_row[key] = stats["median_ms"] / 1e3 / n
        return stats

    def too_slow(self, key: str, n: int) -> dict | None:
        """A skip record when the time per row measured at a smaller N predicts a call over --max-call-s."""
        per_row = self.per_row.get(key)
        if per_row is None or per_row * n <= self.args.max_call_s:
            return None
        return {
            "skipped": f"predicted {per_row * n:.0f} s per call (time per row at a smaller N) > --max-call-s "
            f"{self.args.max_call_s:.0f}",
            "predicted_ms": per_row * n * 1e3,
        }

    # -- symsm first call, cold (fresh cache directory, in this process)
    def cold_first_call(self, bm: BenchModel) -> tuple[Any, dict]:
        """derive = Derivation(model) + the kernel IR (symsm.ir.kernels.build_kernels: the differentiation
        and the IR passes); codegen = the rest of compile_model (instruction tables, rendering, writing and
        importing the module); compile = the first value_and_grad, which makes numba compile what it calls."""
        from sympy.core.cache import clear_cache

        import symsm.ir.kernels as kernels_mod
        from symsm.core import cache
        from symsm.derive.derivation import Derivation
        from symsm.runtime.compiled import compile_model

        cache_dir = self.tmp / f"cache-{bm.name}"
        cache_dir.mkdir(mode=0o700)
        os.environ["SYMSM_CACHE_DIR"] = str(cache_dir)
        self.cache_dirs[bm.name] = cache_dir
        clear_cache()  # sympy's memo of earlier derivations must not help
        n_events = len(cache.events())
        build_kernels = kernels_mod.build_kernels
        spent: list[float] = []

        def timed_build_kernels(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return build_kernels(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t)

        kernels_mod.build_kernels = timed_build_kernels  # compile_model imports it at call time
        try:
            t0 = time.perf_counter()
            der = Derivation(bm.model)
            t1 = time.perf_counter()
            loss = compile_model(bm.model, derivation=der)
            t2 = time.perf_counter()
        finally:
            kernels_mod.build_kernels = build_kernels
        loss.value_and_grad(bm.theta, bm.make_data(FIRST_CALL_ROWS, 1))
        t3 = time.perf_counter()
        ir_s = sum(spent)
        return loss, {
            "derivation_s": t1 - t0,
            "build_kernels_s": ir_s if spent else None,
            "derive_s": t1 - t0 + ir_s,
            "codegen_s": t2 - t1 - ir_s,
            "compile_s": t3 - t2,
            "total_s": t3 - t0,
            "key": loss.key,
            "cache_events": [e.kind for e in cache.events()[n_events:]],
        }

    def warm_first_call(self, bm: BenchModel, key: str) -> dict:
        out = _subprocess_json(["warm", bm.name], {"SYMSM_CACHE_DIR": str(self.cache_dirs[bm.name])}, timeout=600)
        if out.get("key", key) != key:
            out["note"] = (
                "cache miss: the new process computed another cache key — symsm's generator or templates "
                "changed on disk during the run, so this is not a warm-cache measurement"
            )
        return out

    # -- lambdify (derived once per model, under a cap)
    def lambdify(self, bm: BenchModel) -> tuple[Any, dict]:
        from sympy.core.cache import clear_cache

        from .baselines import DeriveTimeout, lambdify_value_and_grad

        if self.args.no_lambdify:
            return None, {"skipped": "disabled (--no-lambdify)"}
        clear_cache()
        t = time.perf_counter()
        try:
            fn, info = lambdify_value_and_grad(bm.model, self.args.lambdify_cap)
        except DeriveTimeout:
            return None, {
                "skipped": f"sympy derivation + lambdify exceeded the cap of {self.args.lambdify_cap:.0f} s "
                f"(stopped after {time.perf_counter() - t:.0f} s)"
            }
        return fn, info

    # -- one (model, N)
    def case(self, bm: BenchModel, loss: Any, n: int, lam: Any, lam_info: dict, loss32: Any = None) -> dict:
        from . import roofline

        X = bm.make_data(n, 2)
        theta = bm.theta
        out: dict[str, Any] = {"model": bm.name, "n": n, "d": bm.d, "P": bm.P, "loadavg_start": _loadavg()}
        values: dict[str, tuple[float, np.ndarray]] = {}

        # symsm, through the public API (includes validating θ and X)
        values["symsm"] = loss.value_and_grad(theta, X)
        out["symsm"] = self.timing(lambda: loss.value_and_grad(theta, X))
        # the same call without validation: the generated kernel (and, for quadratic integrands, the moments)
        module = getattr(loss, "_module", None)
        if module is not None and hasattr(loss, "_inputs") and hasattr(loss, "_reduced"):
            th, data = loss._inputs(theta, X)
            out["symsm_kernel"] = self.timing(lambda: module.value_and_grad(th, loss._reduced(data)))

        # the same model compiled for float32 (8 lanes), on the data already in float32, its calls interleaved with
        # float64 calls (the machines are noisy: both see the same load); wall and process CPU time of each. In a
        # child process that has not imported JAX (this one has: XLA's threads slow the short calls down), on the
        # cache this run filled; the float32 loss was compiled above, so the child only loads it
        if loss32 is not None:
            out["dtypes"] = _subprocess_json(
                ["dtypes", bm.name, str(n), str(max(self.args.repeat, DTYPE_ROUNDS))],
                {"SYMSM_CACHE_DIR": str(self.cache_dirs[bm.name])},
                timeout=900,
            )

        # roofline
        out["read_X"] = self.timing(lambda: roofline.read_once(X))
        ops = roofline.model_ops_per_row(loss, n)
        mem_s = X.nbytes / self.bandwidth["bytes_per_s"]
        roof: dict[str, Any] = {"bytes": X.nbytes, "memory_ms": mem_s * 1e3, "ops": ops}
        if ops is not None:
            flop_s = n * ops["flops_per_row"] / self.peak["flops_per_s"]
            roof["flops"] = n * ops["flops_per_row"]
            roof["flop_ms"] = flop_s * 1e3
            roof["bound"] = "compute" if flop_s > mem_s else "memory"
            roof["bound_ms"] = max(flop_s, mem_s) * 1e3
        else:
            roof["bound"] = "memory (no operation count: the generated module has no instruction tables)"
            roof["bound_ms"] = mem_s * 1e3
        out["roofline"] = roof

        # JAX, two formulations
        out["jax"] = self.jax_case(bm, X, values)

        # lambdify
        if lam is None:
            out["lambdify"] = {"skipped": lam_info.get("skipped", "not available")}
        elif skip := self.too_slow(f"{bm.name}/lambdify", n):
            out["lambdify"] = skip
        else:
            values["lambdify"] = lam(theta, X)
            out["lambdify"] = self.baseline_timing(f"{bm.name}/lambdify", n, lambda: lam(theta, X))

        # closed form
        if bm.closed_form is not None:
            values["closed_form"] = bm.closed_form(theta, X)
            out["closed_form"] = self.baseline_timing(f"{bm.name}/closed_form", n, lambda: bm.closed_form(theta, X))
            out["closed_form"]["note"] = bm.closed_form_note

        # agreement: every baseline against symsm, and the independent ones against each other
        agree: dict[str, Any] = {}
        for k, v in values.items():
            if k != "symsm":
                agree[f"{k} vs symsm"] = rel_diff(values["symsm"], v)
        if "closed_form" in values:
            for k in values:
                if k not in ("symsm", "closed_form"):
                    agree[f"{k} vs closed_form"] = rel_diff(values[k], values["closed_form"])
        out["agreement"] = agree
        out["J"] = float(values["symsm"][0])
        out["loadavg_end"] = _loadavg()
        return out

    def jax_case(self, bm: BenchModel, X: np.ndarray, values: dict) -> dict:
        from .baselines import jax_chunk_rows, jax_value_and_grad

        if self.jax is None:
            return {"skipped": self.jax_note}
        jax = self.jax
        import jax.numpy as jnp

        n, d = X.shape
        log_f = bm.jax_log_f_factory()
        Xj = jax.device_put(jnp.asarray(X))
        thj = jax.device_put(jnp.asarray(bm.theta))
        forms = self.args.jax_forms
        res: dict[str, Any] = {"chunk_rows": jax_chunk_rows(n, d), "formulations": list(forms)}
        integrand = bm.jax_integrand_factory() if bm.jax_integrand_factory is not None else None
        forms = tuple(f for f in forms if f != "hand" or integrand is not None)
        for form in forms:
            key = f"{bm.name}/jax_{form}"
            if skip := self.too_slow(key, n):
                res[form] = skip
                continue
            fn = jax_value_and_grad(log_f, d, n, form, integrand)
            t = time.perf_counter()
            v, g = jax.block_until_ready(fn(thj, Xj))  # trace + compile + one run
            compile_s = time.perf_counter() - t
            values[f"jax_{form}"] = (float(v), np.asarray(g))
            res[form] = self.baseline_timing(key, n, lambda fn=fn: jax.block_until_ready(fn(thj, Xj)))
            res[form]["first_call_s"] = compile_s
        if "hand" in forms and "median_ms" in res["hand"]:
            res["hand_median_ms"] = res["hand"]["median_ms"]
        autodiff = [f for f in forms if f != "hand"]
        timed = [f for f in autodiff if "median_ms" in res[f]]
        forms = tuple(autodiff) or forms
        if timed:
            best = min(timed, key=lambda f: res[f]["median_ms"])
            res["best"] = best
            res["best_median_ms"] = res[best]["median_ms"]
        else:
            best = min(forms, key=lambda f: res[f]["predicted_ms"])
            res["best_predicted"] = best
            res["best_predicted_ms"] = res[best]["predicted_ms"]
        return res

    # -- the whole run
    def run(self) -> dict:
        from . import roofline

        a = self.args
        started = _dt.datetime.now().astimezone()
        result: dict[str, Any] = {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
            "quick": a.quick,
            "machine": machine_info(),
            "versions": package_versions(),
            "loadavg_start": _loadavg(),
            "settings": {
                "models": a.models,
                "n": a.n,
                "warmup": a.warmup,
                "repeat": a.repeat,
                "budget_s": a.budget,
                "max_call_s": a.max_call_s,
                "lambdify_cap_s": a.lambdify_cap,
                "jax_formulations": list(a.jax_forms),
                "dtype": "float64" if a.no_float32 else "float64 (and float32: dtypes)",
                "threads": a.threads,
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
            },
            "notes": [n for n in [self.jax_note] if n],
        }
        _log(f"machine: {result['machine']['cpu']}, load {result['loadavg_start']}")
        _log("calibrating: read bandwidth and FMA peak")
        self.bandwidth = roofline.read_bandwidth(a.bw_bytes)
        self.peak = roofline.fma_peak()
        result["calibration"] = {"read": self.bandwidth, "fma": self.peak}
        result["machine"]["numba_threading_layer"] = _threading_layer()
        _log(
            f"read {self.bandwidth['bytes_per_s'] / 1e9:.1f} GB/s, peak {self.peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
            f"({self.peak['threads']} threads, {self.peak['width']} lanes)"
        )
        models: list[dict] = []
        result["models"] = models
        for name in a.models:
            t_model = time.perf_counter()
            t = time.perf_counter()
            bm = make_model(name)
            model_s = time.perf_counter() - t
            _log(f"{name}: d = {bm.d}, P = {bm.P}: cold first call (derive, codegen, compile)")
            loss, cold = self.cold_first_call(bm)
            cold["model_s"] = model_s
            _log(f"{name}: cold {cold['total_s']:.1f} s; first call in a new process on the filled cache")
            warm = self.warm_first_call(bm, loss.key) if not a.no_firstcall else {"skipped": "--no-firstcall"}
            _log(f"{name}: lambdify derivation (cap {a.lambdify_cap:.0f} s)")
            lam, lam_info = self.lambdify(bm)
            loss32 = None if a.no_float32 else bm.model.compile(dtype=np.float32)
            if loss32 is not None:
                loss32.value_and_grad(bm.theta, bm.make_data(FIRST_CALL_ROWS, 1).astype(np.float32))
            entry: dict[str, Any] = {
                "model": name,
                "family": bm.family,
                "description": bm.description,
                "d": bm.d,
                "P": bm.P,
                "first_call_cold": cold,
                "first_call_warm": warm,
                "lambdify_derivation": lam_info,
                "cases": [],
            }
            models.append(entry)
            for n in a.n:
                _log(f"{name}: N = {n:.0e}")
                case = self.case(bm, loss, n, lam, lam_info, loss32)
                gc.collect()
                entry["cases"].append(case)
                jx = case["jax"]
                _log(
                    f"{name} N = {n:.0e}: symsm {case['symsm']['median_ms']:.2f} ms, "
                    + (f"JAX {jx['best_median_ms']:.2f} ms ({jx['best']})" if "best" in jx else "JAX not timed")
                    + f", bound {case['roofline']['bound_ms']:.2f} ms ({case['roofline']['bound']})"
                )
            entry["seconds"] = time.perf_counter() - t_model
            self._write(result)  # partial results survive an interrupted run
        if not a.no_memory:
            result["memory"] = []
            for name in a.mem_models or [e["model"] for e in models if e["d"] == 8]:
                if name not in self.cache_dirs:
                    continue
                _log(f"{name}: peak memory of one value_and_grad on N = {a.mem_n:.0e} (subprocess)")
                mem = _subprocess_json(
                    ["memory", name, str(a.mem_n)], {"SYMSM_CACHE_DIR": str(self.cache_dirs[name])}, timeout=900
                )
                mem["model"] = name
                result["memory"].append(mem)
        result["loadavg_end"] = _loadavg()
        result["seconds"] = (_dt.datetime.now().astimezone() - started).total_seconds()
        self._write(result)
        return result

    def _write(self, result: dict) -> None:
        from .report import markdown

        a = self.args
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(markdown(result))


def _n_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        v = float(part)
        if not v.is_integer() or v < 1 or v > 1e9:
            raise argparse.ArgumentTypeError(f"N must be a positive integer, got {part!r}")
        out.append(int(v))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--from-json", type=Path, help="only re-render the Markdown report from a results JSON")
    p.add_argument("--quick", action="store_true", help=f"models {QUICK_MODELS}, N = {QUICK_N} (~2 minutes)")
    p.add_argument("--models", help=f"comma-separated: gauss<d>, ica<d>, student<d>, poly (default {FULL_MODELS})")
    p.add_argument("--n", type=_n_list, help=f"comma-separated sample counts (default {FULL_N})")
    p.add_argument("--repeat", type=int, default=7, help="timed calls per measurement (at least 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds per measurement: timing stops after 5 runs once spent; a baseline slower than budget/5 "
        "per call gets the runs that fit (at least 1) (default 20, quick 10)",
    )
    p.add_argument("--lambdify-cap", type=float, help="seconds allowed for the sympy derivation (default 60, quick 20)")
    p.add_argument(
        "--max-call-s",
        type=float,
        default=60.0,
        help="skip a baseline at a larger N when its time per row at a smaller N predicts longer calls than this",
    )
    p.add_argument(
        "--jax-forms",
        default="hessian,jvp,hand",
        help="JAX formulations to time: hessian, jvp (per row), jvp_batch, hand (derivatives written by hand; "
        "reported in its own column, not in 'JAX best') — see benchmarks/baselines.py",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="numba threads (default: numba's, all cores); 1 also makes JAX single-threaded through XLA_FLAGS",
    )
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--no-float32", action="store_true", help="skip the float32 compile and timing of symsm")
    p.add_argument("--no-lambdify", action="store_true")
    p.add_argument("--no-firstcall", action="store_true", help="skip the first call in a new process")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--no-structured",
        action="store_true",
        help="skip the structured section (benchmarks/structured.py: ICA d = 8–256 and the Gaussian d = 32 against "
        "JAX with hand-written derivatives, a few minutes; `python -m benchmarks structured` runs it alone)",
    )
    p.add_argument("--mem-n", type=float, help="rows for the peak-memory measurement (default 1e7, quick 1e6)")
    p.add_argument("--mem-models", help="models for the memory measurement (default: those of the run with d = 8)")
    p.add_argument("--bw-bytes", type=float, help="array size for the read bandwidth (default 256 MiB, quick 64 MiB)")
    p.add_argument("--json", type=Path, help="results JSON (default benchmarks/results.json, quick benchmarks/out/)")
    p.add_argument("--markdown", type=Path, help="Markdown report (default benchmarks/RESULTS.md, quick: in out/)")
    a = p.parse_args(argv)
    a.models = model_names(a.models or (QUICK_MODELS if a.quick else FULL_MODELS))
    a.jax_forms = tuple(f.strip() for f in a.jax_forms.split(",") if f.strip())
    if not a.jax_forms or any(f not in JAX_FORMULATIONS for f in a.jax_forms):
        p.error(f"--jax-forms: choose from {', '.join(JAX_FORMULATIONS)}")
    a.n = a.n or _n_list(QUICK_N if a.quick else FULL_N)
    a.repeat = max(5, a.repeat)
    a.budget = a.budget or (10.0 if a.quick else 20.0)
    a.lambdify_cap = a.lambdify_cap or (10.0 if a.quick else 60.0)
    a.mem_n = int(a.mem_n or (1e6 if a.quick else 1e7))
    a.mem_models = model_names(a.mem_models) if a.mem_models else None
    a.bw_bytes = int(a.bw_bytes or (1 << 26 if a.quick else 1 << 28))
    a.markdown_given = a.markdown
    out = HERE / "out" if a.quick else HERE
    a.json = a.json or out / ("results-quick.json" if a.quick else "results.json")
    a.markdown = a.markdown or out / ("RESULTS-quick.md" if a.quick else "RESULTS.md")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["structured"]:  # the structured path's section: benchmarks/structured.py
        from .structured import main as structured_main

        return structured_main(argv[1:])
    args = parse_args(argv)
    if args.from_json:
        from .report import markdown

        result = json.loads(args.from_json.read_text())
        name = "RESULTS-quick.md" if result.get("quick") else "RESULTS.md"
        target = args.markdown_given or args.from_json.with_name(name)
        target.write_text(markdown(result))
        print(f"wrote {target}")
        return 0
    runner = Runner(args)
    try:
        runner.run()
    finally:
        runner.close()
    print(f"wrote {args.json} and {args.markdown}")
    if not args.no_structured:  # after the main run, in this process: its own tables (STRUCTURED.md)
        from .structured import main as structured_main

        out = args.markdown.with_name("STRUCTURED-quick.md" if args.quick else "STRUCTURED.md")
        extra = ["--quick"] if args.quick else []
        if args.no_jax:
            extra.append("--no-jax")
        return structured_main([*extra, "--out", str(out)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
