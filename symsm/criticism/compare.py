"""Model comparison by the held-out Hyvärinen score.

The Hyvärinen score of a density p at an observation x (Hyvärinen 2005; as a scoring rule, Dawid & Musio
2015) is H(x, p) = 2 Δₓ log p(x) + ‖∇ₓ log p(x)‖²; it is proper (its expectation under q is minimised by
p = q) and, being built from derivatives of log p in x, ignores the normaliser. The per-row score-matching
integrand ℓ(x; θ) = Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²] (`loss.per_sample`) is exactly H/2, so its mean on rows
the fit has not seen ranks models fitted to the same data — lower is better — as Shao, Jacob, Ding &
Tarokh (2019) use it for model selection (prequentially there; by K-fold cross-validation here).

`compare` fits every model on the training folds (`symsm.fit`) and evaluates ℓ on each held-out row, so every
row is scored once by every model. The difference of a model to the best is the mean of the per-row
differences, its standard error the standard deviation of those paired differences over √n. That standard
error treats the held-out rows as independent; it ignores the (small) dependence that cross-validation's
overlapping training sets add (no unbiased estimator of that variance exists: Bengio & Grandvalet 2004).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.arrays import as_data
from ..fitting.fit import FitResult, fit
from ..model.model import Model
from ..runtime.compiled import CompiledLoss, compile_model

__all__ = ["Comparison", "compare"]


@dataclass(repr=False)
class Comparison:
    """The outcome of `compare`, models in the order given.

    names : the models' labels
    scores : held-out Hyvärinen score ℓ (= H/2) of every row under every model, shape (M, n)
    mean, se : the mean held-out score of each model and its standard error (lower is better)
    best : the index of the model with the lowest mean
    diff, diff_se : mean per-row difference to the best model (≥ 0; 0 for the best) and its paired SE
    fold_means : mean held-out score by fold, shape (M, folds)
    fits : the `FitResult` of every model on every fold's training rows, fits[m][k]
    n, folds, seed, seconds
    """

    names: list[str]
    scores: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    best: int
    diff: np.ndarray
    diff_se: np.ndarray
    fold_means: np.ndarray
    fits: list[list[FitResult]]
    n: int
    folds: int
    seed: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def best_name(self) -> str:
        return self.names[self.best]

    @property
    def order(self) -> list[int]:
        """Model indices from best (lowest mean score) to worst."""
        return [int(i) for i in np.argsort(self.mean, kind="stable")]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per model, best first: name, mean, se, diff, diff_se, z (= diff / diff_se), converged."""
        out = []
        for m in self.order:
            z = self.diff[m] / self.diff_se[m] if self.diff_se[m] > 0 else (0.0 if self.diff[m] == 0 else math.inf)
            out.append(
                {
                    "model": self.names[m],
                    "mean": float(self.mean[m]),
                    "se": float(self.se[m]),
                    "diff": float(self.diff[m]),
                    "diff_se": float(self.diff_se[m]),
                    "z": float(z),
                    "converged": all(f.converged for f in self.fits[m]),
                }
            )
        return out

    def to_markdown(self) -> str:
        """The table as Markdown (best first)."""
        lines = [
            "| model | held-out Hyvärinen score (± SE) | difference to best (± paired SE) | z | fits converged |",
            "|---|---:|---:|---:|:---:|",
        ]
        for r in self.rows():
            diff = "best" if r["model"] == self.best_name else f"{r['diff']:.5g} ± {r['diff_se']:.3g}"
            z = "" if r["model"] == self.best_name else f"{r['z']:.2f}"
            converged = "yes" if r["converged"] else "NO"
            lines.append(f"| {r['model']} | {r['mean']:.5g} ± {r['se']:.3g} | {diff} | {z} | {converged} |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        width = max(5, *(len(n) for n in self.names))
        lines = [
            f"Comparison: held-out Hyvärinen score (lower is better), {self.folds}-fold cross-validation, "
            f"n = {self.n} rows, seed {self.seed}",
            f"  {'model':<{width}}  {'mean':>12}  {'± SE':>9}  {'diff to best':>12}  {'± paired SE':>11}  {'z':>6}",
        ]
        for r in self.rows():
            best = r["model"] == self.best_name
            diff = (
                f"{'(best)':>12}  {'':>11}  {'':>6}"
                if best
                else f"{r['diff']:>12.5g}  {r['diff_se']:>11.3g}  {r['z']:>6.2f}"
            )
            flag = "" if r["converged"] else "  (a fit did not converge)"
            lines.append(f"  {r['model']:<{width}}  {r['mean']:>12.6g}  {r['se']:>9.3g}  {diff}{flag}")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


def compare(
    models: Sequence[Model | CompiledLoss] | Mapping[str, Model | CompiledLoss],
    X: Any,
    folds: int = 5,
    seed: int = 0,
    *,
    fit_options: Mapping[str, Any] | None = None,
) -> Comparison:
    """Rank models fitted to the same data by their held-out Hyvärinen score (lower is better).

    Parameters
    ----------
    models
        Two or more `Model` objects (compiled with the numba backend) or exact-objective `CompiledLoss` objects, as a
        sequence (labelled by model name) or a mapping label → model. All must have the same data dimension d.
    X
        Data of shape (n, d), shared by all models.
    folds
        K ≥ 2 for K-fold cross-validation: rows are shuffled with numpy.random.default_rng(seed) and split
        into K folds of nearly equal size; each model is fitted on K − 1 folds and scored on the remaining one.
    fit_options
        Keyword arguments passed to every `symsm.fit` call.
    """
    start = time.perf_counter()
    labelled = list(models.items()) if isinstance(models, Mapping) else [(None, m) for m in models]
    if len(labelled) < 2:
        raise ValueError(f"models: compare needs at least two models, got {len(labelled)}")
    losses: list[CompiledLoss] = []
    names: list[str] = []
    for label, item in labelled:
        if isinstance(item, Model):
            loss = compile_model(item)
        elif isinstance(item, CompiledLoss):
            if item.objective != "exact":
                raise ValueError(
                    f"models: {item.model.name!r} is compiled with the {item.objective!r} objective, whose per-row "
                    "values are randomised; compare needs the exact integrand: compile with objective='exact'"
                )
            loss = item
        else:
            raise TypeError(f"models: expected symsm Models or CompiledLosses, got {type(item).__name__}")
        if loss.model.domain != "real":
            raise NotImplementedError(
                f"models: {loss.model.name!r} has domain {loss.model.domain!r}; compare supports models on ℝᵈ only "
                "(on a bounded domain the Hyvärinen score needs the weighted, generalized form)"
            )
        losses.append(loss)
        names.append(str(label) if label is not None else loss.model.name)
    dims = {loss.model.dim for loss in losses}
    if len(dims) > 1:
        raise ValueError(f"models: all models must have the same data dimension d, got {sorted(dims)}")
    if len(set(names)) < len(names):
        names = [f"{name} [{k}]" for k, name in enumerate(names)]
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer ≥ 2, got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    data = as_data(losses[0].model, X)
    n = data.shape[0]
    if n < 2 * folds:
        raise ValueError(f"X: {folds}-fold cross-validation needs at least {2 * folds} rows, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    splits = np.array_split(perm, int(folds))
    scores = np.empty((len(losses), n))
    fold_means = np.empty((len(losses), int(folds)))
    fits: list[list[FitResult]] = [[] for _ in losses]
    for k, test in enumerate(splits):
        test = np.sort(test)
        train = np.sort(np.concatenate([s for j, s in enumerate(splits) if j != k]))
        for m, loss in enumerate(losses):
            res = fit(loss, data[train], **dict(fit_options or {}))
            fits[m].append(res)
            held_out = loss.per_sample(res.theta, data[test])
            scores[m, test] = held_out
            fold_means[m, k] = held_out.mean()
    notes = []
    bad = [names[m] for m in range(len(losses)) if not np.isfinite(scores[m]).all()]
    if bad:
        notes.append(f"non-finite held-out scores for {', '.join(bad)}: their means are not meaningful")
    unconverged = [names[m] for m in range(len(losses)) if not all(f.converged for f in fits[m])]
    if unconverged:
        notes.append(f"some fits did not converge: {', '.join(unconverged)} (see .fits)")
    mean = scores.mean(axis=1)
    se = scores.std(axis=1, ddof=1) / math.sqrt(n)
    best = int(np.nanargmin(mean)) if not np.isnan(mean).all() else 0
    diffs = scores - scores[best]
    diff = diffs.mean(axis=1)
    diff_se = diffs.std(axis=1, ddof=1) / math.sqrt(n)
    return Comparison(
        names=names,
        scores=scores,
        mean=mean,
        se=se,
        best=best,
        diff=diff,
        diff_se=diff_se,
        fold_means=fold_means,
        fits=fits,
        n=n,
        folds=int(folds),
        seed=int(seed),
        seconds=time.perf_counter() - start,
        notes=notes,
    )
