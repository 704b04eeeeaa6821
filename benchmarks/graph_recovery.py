"""Edge recovery of ℓ1-penalised score matching along a λ path: ROC, AUC and the eBIC choice.

    python benchmarks/graph_recovery.py [--reps 3] [--out benchmarks/GRAPH_RECOVERY.json]

Settings in the spirit of genscore's vignette (its `cov_cons(mode="sub", spars=0.2, eig=0.1, subgraphs=5)`):
K is block diagonal with 5 blocks of d/5 nodes; within a block each edge is present with probability 0.2,
with weight ±U(0.5, 1); the diagonal is then shifted so that K's smallest eigenvalue is 0.1. Models:

* Gaussian graphical model on ℝᵈ (Lin, Drton & Shojaie 2016, §Gaussian): exact draws of N(0, K⁻¹);
* truncated Gaussian graphical model on [0, ∞)ᵈ with h(x) = x² (Lin et al. 2016's non-negative score matching;
  Yu et al. 2019 use min(x, c)): mean μ = 0.5·N(0, I) (as in genscore's vignette), η = Kμ; draws by a Gibbs
  sampler run as n independent chains (burn-in 300 sweeps, the last state of each chain kept).

For each, `symsm.path` (η and diag K unpenalised, the edges K_ij penalised) on a grid of 60 λ from λ_max down
to 10⁻³·λ_max; TPR/FPR of each λ's edge set against the true one, AUC by the trapezoid rule over FPR as
genscore's `AUC` (the point (1, 1) — the complete graph, λ → 0 — appended), and the graph selected by eBIC
(γ = 0.5) with genscore's prior (binomial) and with Foygel & Drton's. Output: one JSON row per replication,
a summary table (means over replications) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from path_timing import graphical_model  # this folder is sys.path[0] when run as a script
from scipy.special import ndtr, ndtri


def precision(d: int, rng: np.random.Generator, blocks: int = 5, spars: float = 0.2, eig: float = 0.1) -> np.ndarray:
    K = np.zeros((d, d))
    size = d // blocks
    for b in range(blocks):
        idx = np.arange(b * size, (b + 1) * size if b < blocks - 1 else d)
        for a, i in enumerate(idx):
            for j in idx[a + 1 :]:
                if rng.random() < spars:
                    K[i, j] = K[j, i] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    K += (eig - np.linalg.eigvalsh(K).min()) * np.eye(d)
    return K


def truncated_gibbs(K: np.ndarray, mu: np.ndarray, n: int, rng: np.random.Generator, sweeps: int = 300) -> np.ndarray:
    """n independent Gibbs chains for N(μ, K⁻¹) restricted to [0, ∞)ᵈ; x_i | rest is a normal with mean
    μ_i − Σ_{j≠i} K_ij (x_j − μ_j)/K_ii and variance 1/K_ii, truncated to [0, ∞) (drawn by the inverse CDF
    of its upper tail, stable far in the tail)."""
    d = K.shape[0]
    X = np.abs(rng.standard_normal((n, d))) + 0.1
    s = 1.0 / np.sqrt(np.diag(K))
    for _ in range(sweeps):
        for i in range(d):
            m = mu[i] - ((X - mu) @ K[:, i] - K[i, i] * (X[:, i] - mu[i])) / K[i, i]
            upper = ndtr(m / s[i])  # P(Z > −m/s) = mass of [0, ∞)
            u = rng.uniform(0.0, 1.0, n) * upper
            X[:, i] = np.maximum(m - s[i] * ndtri(np.clip(u, 1e-300, None)), 0.0)
    return X


def rates(res: object, true: set[tuple[int, int]], d: int) -> tuple[np.ndarray, np.ndarray]:
    n_pairs = d * (d - 1) // 2
    tpr, fpr = [], []
    for k in range(res.lambdas.size):
        est = {(i, j) for _, i, j in res.graph(k)}
        tpr.append(len(est & true) / len(true))
        fpr.append(len(est - true) / (n_pairs - len(true)))
    return np.array(tpr), np.array(fpr)


def auc(tpr: np.ndarray, fpr: np.ndarray) -> float:
    """genscore's AUC: points sorted by FPR, trapezoids; (1, 1) appended (λ → 0: the complete graph)."""
    t = np.concatenate([tpr, [1.0]])
    f = np.concatenate([fpr, [1.0]])
    order = np.argsort(f, kind="stable")
    t, f = t[order], f[order]
    return float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2))


def run(setting: str, d: int, n: int, rep: int, models: dict) -> dict:
    import symsm

    rng = np.random.default_rng(1000 * rep + d + n)
    K = precision(d, rng)
    truncated = setting == "truncated"
    if truncated:
        mu = 0.5 * rng.standard_normal(d)
        X = truncated_gibbs(K, mu, n, rng)
    else:
        X = rng.standard_normal((n, d)) @ np.linalg.cholesky(np.linalg.inv(K)).T
    key = (setting, d)
    if key not in models:
        models[key] = graphical_model(d, truncated)
    true = {(i, j) for i in range(d) for j in range(i + 1, d) if K[i, j] != 0}
    t = time.perf_counter()
    res = symsm.path(models[key], X, n_lambdas=60, ratio=1e-3, select="ebic", gamma=0.5, ebic_prior="binomial")
    seconds = time.perf_counter() - t
    tpr, fpr = rates(res, true, d)
    fd = symsm.path(models[key], X, lambdas=res.lambdas, select="ebic", gamma=0.5, ebic_prior="foygel-drton")
    return {
        "setting": setting, "d": d, "n": n, "rep": rep, "true_edges": len(true), "auc": auc(tpr, fpr),
        "ebic_tpr": float(tpr[res.selected]), "ebic_fpr": float(fpr[res.selected]),
        "ebic_edges": len(res.edges), "ebic_fd_tpr": float(tpr[fd.selected]), "ebic_fd_fpr": float(fpr[fd.selected]),
        "ebic_fd_edges": len(fd.edges), "max_kkt": float(res.kkt.max()), "path_s": seconds,
        "fpr_at_smallest_lambda": float(fpr[-1]),
    }  # fmt: skip


SETTINGS = (("gaussian", 50, 200), ("gaussian", 50, 1000), ("truncated", 50, 200), ("truncated", 50, 1000))


def main(reps: int, out: str | None) -> list[dict]:
    rows: list[dict] = []
    models: dict = {}
    for setting, d, n in SETTINGS:
        for rep in range(reps):
            row = run(setting, d, n, rep, models)
            row["load"] = os.getloadavg()[0]
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| model | d | n | true edges | AUC | eBIC (genscore) TPR / FPR / edges", end="")
    print(" | eBIC (Foygel–Drton) TPR / FPR / edges |")
    print("|---|---|---|---|---|---|---|")
    for setting, d, n in SETTINGS:
        r = [x for x in rows if (x["setting"], x["d"], x["n"]) == (setting, d, n)]

        def m(k: str, rr: list[dict] = r) -> float:
            return float(np.mean([x[k] for x in rr]))

        print(
            f"| {setting} | {d} | {n} | {m('true_edges'):.1f} | {m('auc'):.3f} ± {np.std([x['auc'] for x in r]):.3f} | "
            f"{m('ebic_tpr'):.2f} / {m('ebic_fpr'):.3f} / {m('ebic_edges'):.1f} | "
            f"{m('ebic_fd_tpr'):.2f} / {m('ebic_fd_fpr'):.3f} / {m('ebic_fd_edges'):.1f} |"
        )
    if out:
        with open(out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    main(args.reps, args.out)
