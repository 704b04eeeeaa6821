"""Stage 3 — kernel IR: backend-independent kernels (per-call prologue, per-row body, epilogue) built from
sympy's derivation or from the expression graph, the passes over them, and the fitting kernel sets."""

from .ir import Assign, KernelIR, build_forward_ir, build_value_and_grad_ir
from .kernels import KernelSet, build_kernels

__all__ = ["Assign", "KernelIR", "KernelSet", "build_forward_ir", "build_kernels", "build_value_and_grad_ir"]
