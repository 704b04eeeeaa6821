"""Stage 8 — model criticism after a fit: does the model fit the data, and which model is better?

Both answers need the model's score only, never its normalising constant:

* `ksd_test` — the kernel Stein discrepancy goodness-of-fit test (Liu, Lee & Jordan 2016; Chwialkowski,
  Strathmann & Gretton 2016) with the IMQ kernel of Gorham & Mackey (2017) and a wild bootstrap;
* `compare` — the held-out Hyvärinen score (Dawid & Musio 2015; Shao, Jacob, Ding & Tarokh 2019) of
  several models over cross-validation folds, with paired standard errors of the differences.
"""

from .compare import Comparison, compare
from .ksd import KSDResult, ksd_test, stein_kernel_matrix

__all__ = ["Comparison", "KSDResult", "compare", "ksd_test", "stein_kernel_matrix"]
