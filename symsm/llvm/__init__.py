"""LLVM IR emission for the CPU kernels (used through numba intrinsics)."""
