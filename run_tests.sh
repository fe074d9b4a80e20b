#!/usr/bin/env bash
# Runs the test suite. Sets up ./.venv on first use (see scripts/env.sh), then pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k model -x
# Two pytest-xdist workers by default: much of the suite waits on subprocesses (notebook kernels,
# run_all.sh, Ray workers), so even on 2 cores two workers finish it in about 70% of the time of one.
# --dist loadfile: each test module runs whole on one worker, in file order, as it would alone (the
# notebook tests build on each other's runs; the Ray tests share one runtime).
# PIADE_TEST_WORKERS=N sets the count; 0 runs the tests in this process (needed for --pdb).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
piade_setup_env
export MPLBACKEND=Agg
workers="${PIADE_TEST_WORKERS:-2}"
if "$PY" -c "import xdist" 2>/dev/null; then
    set -- -n "$workers" --dist loadfile "$@"
elif [ "$workers" != 0 ]; then
    echo "[piade] note: pytest-xdist is not installed for $PY, so the tests run in one process (pip install pytest-xdist)"
fi
exec "$PY" -m pytest "$@"
