"""The `symsm` command line. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """Derive, print, generate, compile and evaluate a bivariate Student-t model on embedded data."""
    import sympy as sp

    from . import cache
    from .demo import TRUE_THETA, demo_data, demo_model
    from .fit import fit

    out = sys.stdout
    t0 = time.perf_counter()
    model = demo_model()
    der = model.derive()
    t_derive = time.perf_counter() - t0
    print(f"symsm {__version__} demo: {model.name} — {model.description}", file=out)
    print(f"\nlog f(x; θ) = {sp.sstr(model.log_f)}", file=out)
    print(f"θ = ({', '.join(model.param_names)}), d = {model.dim}, P = {model.n_params}\n", file=out)
    for i, (s, h) in enumerate(zip(der.score, der.hessian_diag, strict=True)):
        print(f"∂{i} log f   = {sp.sstr(s)}", file=out)
        print(f"∂{i}² log f  = {sp.sstr(h)}", file=out)
    print("\nper-sample objective Σ_i [∂_i² log f + ½ (∂_i log f)²]; J̃(θ) is its mean over the data.", file=out)

    t1 = time.perf_counter()
    loss = model.compile(derivation=der)
    t_codegen = time.perf_counter() - t1
    kind = cache.events()[-1].kind if cache.events() else "?"
    print(f"\ngenerated source ({kind}): {loss.path}", file=out)

    X = demo_data(args.n)
    theta = model.default_theta()
    t2 = time.perf_counter()
    value, grad = loss.value_and_grad(theta, X)
    t_first = time.perf_counter() - t2
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        loss.value_and_grad(theta, X)
        times.append(time.perf_counter() - t)
    print(f"\nembedded data: N = {X.shape[0]} samples from a bivariate t (seeded), evaluated at θ₀ = init", file=out)
    print(f"J̃(θ₀) = {value:.12g}", file=out)
    for name, g in zip(model.param_names, grad, strict=True):
        print(f"  ∂J̃/∂{name:<4} = {g: .12g}", file=out)

    t3 = time.perf_counter()
    res = fit(loss, X)
    t_fit = time.perf_counter() - t3
    status = "converged" if res.converged else "NOT converged"
    print(f"\nfit: {res.method}, {res.n_iter} iterations, {status}; estimate ± standard error (sandwich)", file=out)
    for name, value, se in zip(res.param_names, res.theta, res.se, strict=True):
        print(f"  {name:<4} = {value: .6f} ± {se:.6f}   (true value {TRUE_THETA[name]:g})", file=out)
    print("\ntimings", file=out)
    print(f"  derive                 {t_derive * 1e3:9.1f} ms", file=out)
    print(f"  codegen + cache        {t_codegen * 1e3:9.1f} ms", file=out)
    print(f"  first value_and_grad   {t_first * 1e3:9.1f} ms (includes numba compile or cache load)", file=out)
    print(f"  steady value_and_grad  {np.median(times) * 1e3:9.2f} ms (median of {args.repeat})", file=out)
    print(f"  fit                    {t_fit * 1e3:9.1f} ms (first use includes the fitting kernels)", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symsm", description="Exact score matching: derive, generate, compile, fit.")
    parser.add_argument("--version", action="version", version=f"symsm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="derive, compile and evaluate a real model on embedded data")
    demo.add_argument("--n", type=int, default=200_000, help="number of embedded samples (default 200000)")
    demo.add_argument("--repeat", type=int, default=10, help="steady-state repetitions (default 10)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
