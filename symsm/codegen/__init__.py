"""Code generation: kernel IR (backend-independent), printers and template rendering."""

from .ir import Assign, KernelIR, build_forward_ir, build_value_and_grad_ir
from .kernels import KernelSet, build_kernels
from .printers import ScalarMathPrinter
from .render import render, template_dir

__all__ = [
    "Assign",
    "KernelIR",
    "KernelSet",
    "ScalarMathPrinter",
    "build_forward_ir",
    "build_kernels",
    "build_value_and_grad_ir",
    "render",
    "template_dir",
]
