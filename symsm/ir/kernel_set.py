"""A kernel set: the kernels of one generated module, each with its IR, what it writes and a description
(the backends choose each kernel's signature, stores and docstring from it)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from .ir import KernelIR

__all__ = ["DESCRIPTIONS", "OUTPUTS", "ROW_MATRIX", "ROW_VECTOR", "SUMS", "Kernel", "KernelSet", "loss_kernels"]

# What a kernel writes (`Kernel.output`): the backends choose the kernel's signature and stores from it.
SUMS = "sums"  # reduced over rows: kernel(theta, X) -> [results...], the means of the IR's results
ROW_VECTOR = "row_vector"  # one value per row: kernel(theta, X, out) with out[t]
ROW_MATRIX = "row_matrix"  # several values per row: kernel(theta, X, out) with out[t, k]
OUTPUTS = (SUMS, ROW_VECTOR, ROW_MATRIX)


@dataclass(frozen=True)
class Kernel:
    """One kernel: its backend-independent IR, what it writes (`output`: one of OUTPUTS) and a one-line
    description (the generated kernel's docstring, in ASCII so every backend can print it)."""

    ir: KernelIR
    output: str
    description: str

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if (self.output == SUMS) != (not self.ir.outputs):
            raise ValueError(f"a {self.output!r} kernel needs {'no ' if self.output == SUMS else ''}per-row outputs")
        if self.output == ROW_VECTOR and len(self.ir.outputs) != 1:
            raise ValueError(f"a {ROW_VECTOR!r} kernel writes one value per row, got {len(self.ir.outputs)}")

    @property
    def reduces(self) -> bool:
        """True for a reduction over rows (results), False for a per-row kernel (stores into `out`)."""
        return self.output == SUMS

    @property
    def out_ndim(self) -> int:
        """Dimensions of `out` for a per-row kernel (1: out[t], 2: out[t, k]); per-block sums are 2-D too."""
        return 1 if self.output == ROW_VECTOR else 2


@dataclass
class KernelSet:
    """The kernels of one generated module, by name (in the order they are generated).

    The loss's own set (`build_kernels`) has value_and_grad (Σ integrand and Σ ∂θ integrand), value
    (Σ integrand), per_sample (the integrand per row) and score (∂_i log f per row); the fitting sets
    (symsm/ir/fit_kernels.py) have others. data_degree: polynomial degree of the integrand in x (inf if it
    is not a polynomial in x, or not known)."""

    kernels: dict[str, Kernel] = field(default_factory=dict)
    data_degree: float = math.inf

    def add(self, name: str, ir: KernelIR, output: str, description: str) -> None:
        """Append kernel `name` (generated after those already in the set)."""
        if name in self.kernels:
            raise ValueError(f"the kernel set already has a kernel {name!r}")
        self.kernels[name] = Kernel(ir, output, description)

    def __getitem__(self, name: str) -> Kernel:
        return self.kernels[name]

    def __contains__(self, name: object) -> bool:
        return name in self.kernels

    def items(self) -> Iterator[tuple[str, Kernel]]:
        return iter(self.kernels.items())

    def all(self) -> dict[str, KernelIR]:
        """The IR of every kernel, by name."""
        return {name: k.ir for name, k in self.kernels.items()}


DESCRIPTIONS = {
    "value_and_grad": "[J, dJ/dtheta...]: mean over rows of the integrand and its theta-gradient.",
    "value": "[J]: mean over rows of the integrand.",
    "per_sample": "out[t] = the integrand sum_i [d_i^2 log f + 1/2 (d_i log f)^2] at row t.",
    "score": "out[t, i] = d log f / d x_i at row t.",
}


def loss_kernels(value_and_grad: KernelIR, value: KernelIR, per_sample: KernelIR, score: KernelIR) -> KernelSet:
    """The loss's KernelSet from the IR of its four kernels."""
    return KernelSet(
        {
            "value_and_grad": Kernel(value_and_grad, SUMS, DESCRIPTIONS["value_and_grad"]),
            "value": Kernel(value, SUMS, DESCRIPTIONS["value"]),
            "per_sample": Kernel(per_sample, ROW_VECTOR, DESCRIPTIONS["per_sample"]),
            "score": Kernel(score, ROW_MATRIX, DESCRIPTIONS["score"]),
        }
    )
