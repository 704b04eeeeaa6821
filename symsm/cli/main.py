"""The `symsm` command line. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from .._version import __version__
from ..core.errors import SymsmError

if TYPE_CHECKING:
    from ..model.model import Model

__all__ = ["main"]

VERBOSE_HELP = "report each stage and its elapsed time on stderr"


def _demo(args: argparse.Namespace) -> int:
    """Derive, print, generate, compile and evaluate a bivariate Student-t model on embedded data."""

    from ..core import cache
    from ..fitting.fit import fit
    from .demo import TRUE_THETA, demo_data, demo_model

    out = sys.stdout
    t0 = time.perf_counter()
    model = demo_model()
    der = model.derive()
    t_derive = time.perf_counter() - t0
    print(f"symsm {__version__} demo: {model.name} — {model.description}", file=out)
    print(f"\nlog f(x; θ) = {sp.sstr(model.log_f)}", file=out)
    print(f"θ = ({', '.join(model.param_names)}), d = {model.dim}, P = {model.n_params}\n", file=out)
    for i, (s, h) in enumerate(zip(der.readable.score, der.readable.hessian_diag, strict=True)):
        print(f"∂{i} log f   = {sp.sstr(s)}", file=out)
        print(f"∂{i}² log f  = {sp.sstr(h)}", file=out)
    print("\nper-sample objective Σ_i [∂_i² log f + ½ (∂_i log f)²]; J̃(θ) is its mean over the data.", file=out)

    t1 = time.perf_counter()
    loss = model.compile(derivation=der, verbose=args.verbose)
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
    res = fit(loss, X, verbose=args.verbose)
    t_fit = time.perf_counter() - t3
    status = "converged" if res.converged else "NOT converged"
    print(f"\nfit: {res.method}, {res.n_iter} iterations, {status}; estimate ± standard error (sandwich)", file=out)
    for name, value, se in zip(res.param_names, res.theta, res.se, strict=True):
        print(f"  {name:<4} = {value: .6f} ± {se:.6f}   (true value {TRUE_THETA[name]:g})", file=out)
    print("\ntimings", file=out)
    print(f"  derive                 {t_derive * 1e3:9.1f} ms", file=out)
    print(f"  codegen + cache        {t_codegen * 1e3:9.1f} ms", file=out)
    print(f"  first value_and_grad   {t_first * 1e3:9.1f} ms (includes compiling or loading machine code)", file=out)
    print(f"  steady value_and_grad  {np.median(times) * 1e3:9.2f} ms (median of {args.repeat})", file=out)
    print(f"  fit                    {t_fit * 1e3:9.1f} ms (first use includes the fitting kernels)", file=out)
    return 0


def _model(args: argparse.Namespace) -> Model:
    from ..model.modelfile import load_model

    return load_model(args.model)


def _derive(args: argparse.Namespace) -> int:
    """Print the exact derivation: score, ∂ᵢ² log f, the objective and its θ-gradient (the text of `str(der)`,
    symsm/derive/text.py, in display forms simplified for reading; --json gives the derivation's own forms)."""
    from ..core.progress import Progress
    from ..derive.text import derivation_text, show_gradient, sstr

    progress = Progress(args.verbose)
    with progress.stage("reading the model file"):
        model = _model(args)
    der = model.derive()
    if args.json:
        with progress.stage("derivation"):
            out = {
                "model": model.name,
                "description": model.description,
                "data": model.data_names,
                "params": model.param_names,
                "log_f": sstr(model.log_f),
                "score": [sstr(e) for e in der.score],
                "hessian_diag": [sstr(e) for e in der.hessian_diag],
                "objective": sstr(der.objective),
                "domain": model.domain,
                "weight": None if model.weight_expr is None else sstr(model.weight_expr),
                **_bounds(model),
                **_geometry(model),
                "quadratic_in_theta": der.is_quadratic,
            }
            if show_gradient(der, args.gradient):
                out["gradient"] = [sstr(e) for e in der.gradient]
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(derivation_text(der, pretty=args.pretty, gradient=args.gradient, stage=progress.stage))
    return 0


def _bounds(model: Model) -> dict[str, Any]:
    """A box model's bounds for JSON (null for an open side: JSON has no infinity); nothing for other domains."""
    if model.domain != "box" or model.box is None:
        return {}
    lower, upper = model.box.arrays()
    return {
        side: [None if np.isinf(v) else float(v) for v in values]
        for side, values in (("lower", lower), ("upper", upper))
    }


def _geometry(model: Model) -> dict[str, Any]:
    """A sphere or simplex model's map and weight for JSON (symsm/model/manifold.py); nothing for other domains."""
    geometry = getattr(model, "geometry", None)
    if geometry is None:
        return {}
    weight = sp.sstr(geometry.weight) if geometry.weight_name == "custom" else geometry.weight_name
    return {"transform": geometry.transform, "weight": weight, "a_c": geometry.a_c}


def _codegen(args: argparse.Namespace) -> int:
    """Generate (or load from the cache) the kernels for a backend and write the module to a folder."""
    model = _model(args)
    loss = model.compile(backend=args.backend, dtype=args.dtype, verbose=args.verbose, path=args.path)
    if args.output is None:  # one module: to standard output
        sys.stdout.write(loss.source if loss.source.endswith("\n") else loss.source + "\n")
        return 0
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: is a file; codegen writes into a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", model.name).strip("_") or "model"  # a file name, never a path
    target = out_dir / f"{stem}_{args.backend.replace('-', '_')}_{args.dtype}.py"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(loss.source, encoding="utf-8")
    os.replace(tmp, target)
    print(target)
    return 0


def _fit(args: argparse.Namespace) -> int:
    """Fit the model to a data file and print the estimates, standard errors and convergence."""
    from ..fitting.fit import fit
    from ..model.modelfile import load_data

    model = _model(args)
    X = load_data(args.data, model)
    compiled = args.verbose or args.path != "auto"
    target = model.compile(backend=args.backend, verbose=args.verbose, path=args.path) if compiled else model
    res = fit(target, X, backend=args.backend, method=args.method, verbose=args.verbose)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(repr(res))
    if not res.converged:
        print(f"symsm: warning: the fit did not converge: {_one_line(res.message)}", file=sys.stderr)
    return 0


def _latex(args: argparse.Namespace) -> int:
    """Write the derivation as a LaTeX document (and compile it to PDF)."""
    from ..core.progress import Progress
    from ..latex.pdf import write_latex

    progress = Progress(args.verbose)
    with progress.stage("reading the model file"):
        model = _model(args)
    if args.output is None:  # the document to standard output
        from ..latex.derivation import derivation_latex

        with progress.stage("derivation and LaTeX"):
            text = derivation_latex(model.derive(), full_document=True)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    with progress.stage("derivation, LaTeX" + (" and pdflatex" if args.pdf else "")):
        files = write_latex(model, args.output, pdf=args.pdf)
    print(files.tex)
    if files.pdf is not None:
        print(files.pdf)
    return 0


def _cache(args: argparse.Namespace) -> int:
    """Show or empty the cache of generated modules."""
    from ..core import cache

    if args.action == "clear":
        removed = cache.clear()
        print(f"removed {removed} file(s) from {cache.default_location()}")
        return 0
    info = cache.info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _examples() -> str:
    from ..model.modelfile import example_models

    return ", ".join(example_models())


def build_parser() -> argparse.ArgumentParser:
    from ..derive.text import GRADIENT_PRINT_NODES

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    model_help = f"a model file (.toml), or the name of a bundled example ({_examples()})"
    parser = argparse.ArgumentParser(
        prog="symsm",
        description="Exact score matching: derive, generate, compile, fit.",
        epilog="Exit status: 0 success, 1 error in a model or data file (one line on stderr), 2 usage error.",
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"symsm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("derive", parents=[debug], help="print the exact derivation of a model file")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--pretty", action="store_true", help="two-dimensional (unicode) formulas")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    grad = p.add_mutually_exclusive_group()
    grad.add_argument(
        "--gradient", dest="gradient", action="store_true", default=None, help="print the θ-gradient even if large"
    )
    grad.add_argument(
        "--no-gradient",
        dest="gradient",
        action="store_false",
        help=f"skip the θ-gradient (default: shown when the objective has at most {GRADIENT_PRINT_NODES} nodes)",
    )
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=_derive)

    from ..derive.derivation import PATHS

    p = sub.add_parser("codegen", parents=[debug], help="write the generated kernel module for a backend")
    p.add_argument("model", metavar="MODEL", help=model_help)
    _backend_argument(p, "code generator")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="(default float64)")
    p.add_argument(
        "-o", "--output", metavar="DIR", help="folder to write the module to (default: the module to standard output)"
    )
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.add_argument("--path", choices=PATHS, default="auto", help="derivation path (structured: vector models)")
    p.set_defaults(func=_codegen)

    from ..fitting.fit import METHODS

    p = sub.add_parser("fit", parents=[debug], help="fit a model to data: estimates, standard errors")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--data", required=True, metavar="FILE", help="data (N, d) as .npy or .csv")
    p.add_argument("--method", choices=METHODS, default="auto", help="(default auto: closed form when possible)")
    _backend_argument(p, "where the kernels run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.add_argument("--path", choices=PATHS, default="auto", help="derivation path (structured: vector models)")
    p.set_defaults(func=_fit)

    p = sub.add_parser("latex", parents=[debug], help="write the derivation as a LaTeX document")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument(
        "-o", "--output", metavar="FILE.tex", type=_tex_path, help="the .tex to write (default: standard output)"
    )
    p.add_argument("--pdf", action="store_true", help="also compile it with pdflatex (needs -o)")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=_latex)

    demo = sub.add_parser("demo", parents=[debug], help="derive, compile and evaluate a real model on embedded data")
    demo.add_argument("--n", type=int, default=200_000, help="number of embedded samples (default 200000)")
    demo.add_argument("--repeat", type=int, default=10, help="steady-state repetitions (default 10)")
    demo.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    demo.set_defaults(func=_demo)

    p = sub.add_parser("cache", parents=[debug], help="show (info) or empty (clear) the generated-code cache")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--json", action="store_true", help="machine-readable output (info)")
    p.set_defaults(func=_cache)
    return parser


def _backend_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--backend: the registry's names (symsm.backends); an alias is accepted and becomes its canonical name."""
    from ..backends import DEFAULT_BACKEND, backends

    lines = [f"{b.name}: {b.description}" for b in backends()]
    aliases = [f"{a!r} = {b.name!r}" for b in backends() for a in b.aliases]
    help_text = f"{what} — " + "; ".join(lines) + f" (default {DEFAULT_BACKEND}"
    help_text += f"; also accepted: {', '.join(aliases)})" if aliases else ")"
    parser.add_argument(
        "--backend", type=_canonical_backend, choices=backend_choices(), default=DEFAULT_BACKEND, help=help_text
    )


def backend_choices() -> tuple[str, ...]:
    """The choices of --backend: the registry's canonical names."""
    from ..backends import backend_names

    return backend_names()


def _canonical_backend(text: str) -> str:
    """An alias's canonical name; any other text as given (argparse then reports an invalid choice)."""
    from ..backends import get_backend

    try:
        return get_backend(text).name
    except ValueError:
        return text


def _tex_path(text: str) -> str:
    if not text.endswith(".tex"):
        raise argparse.ArgumentTypeError(f"must end in .tex, got {text!r}")
    return text


# optional dependencies by the top-level module a missing import names: the extra that installs them
EXTRAS = {"numba_cuda": "cuda", "dask": "distributed", "distributed": "distributed", "matplotlib": "notebooks"}


def _missing_dependency(exc: ImportError) -> str:
    """One line: what is missing and the command that installs it."""
    text = _one_line(exc)
    if "pip install" in text:
        return text
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    install = f"pip install 'symsm[{extra}]'" if extra else f"pip install {module or '<the missing package>'}"
    return f"a missing optional dependency ({text}); install it with: {install}"


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "(no message)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "latex" and args.pdf and args.output is None:
        parser.error("latex --pdf needs -o FILE.tex (the PDF is written next to it)")
    debug = getattr(args, "debug", False)
    if not debug:
        warnings.showwarning = _warning_line
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("symsm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `symsm derive m.toml | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ImportError as exc:  # a missing optional dependency: what to install, in one line
        if debug:
            raise
        print(f"symsm: error: {_missing_dependency(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        kind = "" if isinstance(exc, (SymsmError, ValueError, OSError)) else f"internal error ({type(exc).__name__}): "
        hint = " (run with --debug for the traceback)" if kind else ""
        print(f"symsm: error: {kind}{_one_line(exc)}{hint}", file=sys.stderr)
        return 1


def _warning_line(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"symsm: warning: {_one_line(message)}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
