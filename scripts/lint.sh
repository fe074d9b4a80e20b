#!/usr/bin/env bash
# Lints and checks the formatting of the repository with ruff (rules in pyproject.toml, [tool.ruff]),
# through the Python that scripts/env.sh sets up; fails on any finding. .ci/run calls it before the
# tests. ./scripts/lint.sh --fix applies ruff's safe fixes and formats instead; what it cannot fix
# is then listed, to be fixed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
piade_setup_env
if ! "$PY" -m ruff --version >/dev/null 2>&1; then
    echo "[piade] error: ruff is not installed for $PY; install the dev extra (pip install -e \".[dev]\") or pip install ruff." >&2
    exit 1
fi
if [ "${1:-}" = "--fix" ]; then
    "$PY" -m ruff check --fix --exit-zero .
    "$PY" -m ruff format .
fi
status=0
"$PY" -m ruff check . || status=1
"$PY" -m ruff format --check . || status=1
exit "$status"
