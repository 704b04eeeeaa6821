"""The numba_python backend."""
