#!/usr/bin/env bash
# Runs the test suite. Sets up ./.venv on first use (see scripts/env.sh), then pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k model -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
piade_setup_env
export MPLBACKEND=Agg
exec "$PY" -m pytest "$@"
