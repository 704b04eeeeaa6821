"""Where the PPI kernel's time goes (issue 19: the sqrt-mapped PPI on the simplex against its formula on ℝ⁵).

    python -m benchmarks.ppi_kernel_parts [--n 1000000] [--repeat 15]

The per-row integrand of the zero-safe PPI objective (`ManifoldParts.boundary_integrand`) is exactly quadratic
in θ (β fixed): ½h(Σpⱼ² − a_p²) + Σₖ Lₖ(x)θₖ, pⱼ the scores' θ terms, Lₖ = ∂θₖ J at θ = 0 (θ-free: the
weight h = min(minⱼ zⱼ², a_c²), its steps ∂ⱼh, the Jacobian's cⱼ/zⱼ). The generated value_and_grad kernel is
timed, interleaved in one process (separate cache directories), for:

* compact: the integrand the loss uses (main);
* quadratic+L: the same function written as ½h(Σp² − a_p²) + Σ Lₖθₖ (fewer table operations, no square roots);
* quadratic: ½h(Σp² − a_p²) alone; linear: Σ Lₖθₖ alone (attribution only: neither is the model);
* frozen weight: the compact integrand with the weight's min replaced by z₄² and its steps by 0 (attribution
  only), to see what the weight's pieces cost;
* ℝ⁵: the same log f on ℝ⁵ (the issue's baseline).

Median process CPU time of --repeat calls each on N rows; the table operations per row are from each module's
header. A shared machine: read the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import sympy as sp


def _variant(which: str, original: Any) -> Any:
    from symsm.derive.derivation import _hide_piecewise

    def integrand(geometry: Any, score: Any, params: Any, table: dict) -> sp.Expr:
        compact = original(geometry, score, params, table)
        if which == "compact":
            return compact
        if which == "frozen weight":
            frozen = {
                s: sp.Integer(0) if isinstance(e, sp.Heaviside) else geometry.coords[-1] ** 2 for e, s in table.items()
            }
            return compact.xreplace(frozen)
        theta = set(params)
        p = [
            sp.factor_terms(sp.Add(*[t for t in sp.Add.make_args(sp.expand(s)) if t.free_symbols & theta]))
            for s in score
        ]
        a_p = sp.factor_terms(sp.Add(*[z * pj for z, pj in zip(geometry.coords, p, strict=True)]))
        h = _hide_piecewise(geometry.weight, table)
        quadratic = sp.Rational(1, 2) * h * (sp.Add(*[pj**2 for pj in p]) - a_p**2)
        zero = dict.fromkeys(params, 0)
        linear = sp.Add(*[sp.diff(compact, t).xreplace(zero) * t for t in params])
        return {"quadratic+L": quadratic + linear, "quadratic": quadratic, "linear": linear}[which]

    return staticmethod(integrand)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)

    import symsm
    from symsm.core import cache
    from symsm.derive import derivation
    from symsm.model.modelfile import load_model

    ppi = load_model("ppi_5d")
    real = symsm.Model(ppi.log_f, ppi.data, {g.name: g.template for g in ppi.groups}, name="ppi_real")
    original = derivation.ManifoldParts.boundary_integrand
    modules = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for which in ("compact", "quadratic+L", "quadratic", "linear", "frozen weight"):
                derivation.ManifoldParts.boundary_integrand = _variant(which, original)
                derivation._manifold_parts.cache_clear()
                cache._modules.clear()
                os.environ["SYMSM_CACHE_DIR"] = os.path.join(tmp, str(len(modules)))
                modules[which] = ppi.compile()._module
        finally:
            derivation.ManifoldParts.boundary_integrand = original
            derivation._manifold_parts.cache_clear()
        modules["ℝ⁵"] = real.compile()._module
        U = np.random.default_rng(0).dirichlet([2, 2, 3, 3, 4], size=args.n)
        theta = np.linspace(-3, 2, ppi.n_params)
        times: dict[str, list[float]] = {k: [] for k in modules}
        for m in modules.values():
            m.value_and_grad(theta, U)
        for _ in range(args.repeat):
            for k, m in modules.items():
                c = time.process_time()
                m.value_and_grad(theta, U)
                times[k].append(time.process_time() - c)
        one, five, _ = os.getloadavg()
        print(f"# N = {args.n}, {args.repeat} interleaved calls, float64, llvm; load {one:.1f} / {five:.1f}")
        print("| integrand | table ops per row | CPU ms | / compact | / ℝ⁵ |")
        print("|---|---|---|---|---|")
        base, rd = statistics.median(times["compact"]), statistics.median(times["ℝ⁵"])
        for k, m in modules.items():
            header = Path(m.__file__).read_text().splitlines()
            ops = next(line.split(":")[-1].split()[0] for line in header if "operations: value_and_grad" in line)
            t = statistics.median(times[k])
            print(f"| {k} | {ops} | {t * 1e3:.1f} | {t / base:.2f} | {t / rd:.2f} |")


if __name__ == "__main__":
    main()
