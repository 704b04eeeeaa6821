#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs symsm with its test extras, then runs
#   1. ruff, the layering contract (import-linter), mypy and the main pytest suite,
#   2. the CUDA tests under the CUDA simulator, in their own process (the simulator is chosen at import),
#   3. the documentation (Sphinx, warnings are errors), which executes every notebook.
# Set SYMSM_SKIP_INSTALL=1 to skip the pip step when the environment is already set up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# BLAS calls in the suite are small (fits, sandwich covariances): one BLAS thread avoids oversubscribing
# the cores that symsm's own kernel threads use. OPENBLAS_CORETYPE is left as the machine sets it.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

if [ "${SYMSM_SKIP_INSTALL:-0}" != 1 ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
fi

echo "== ruff"
"$PY" -m ruff check symsm tests benchmarks

echo "== import-linter (each stage imports only from the stages before it)"
lint-imports --no-cache

echo "== mypy"
"$PY" -m mypy

echo "== main suite"
"$PY" -m pytest tests --ignore=tests/cuda -q

if compgen -G "tests/cuda/test_*.py" > /dev/null; then
    echo "== CUDA tests under the simulator (NUMBA_ENABLE_CUDASIM=1)"
    NUMBA_ENABLE_CUDASIM=1 "$PY" -m pytest tests/cuda -q
fi

# The documentation build executes every notebook (myst-nb, an error in a notebook fails the build), so it is
# also the notebook test: one execution of each notebook, not two.
echo "== documentation (Sphinx, -W), executing the notebooks"
"$PY" -m sphinx -W --keep-going -q -b html docs docs/_build/html
