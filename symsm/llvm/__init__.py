"""LLVM IR emission (kernels.py, vecmath.py) and native compilation (native.py) for the CPU kernels."""
