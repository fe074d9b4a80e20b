#!/usr/bin/env bash
# Regenerates locks/requirements.lock, the exact versions scripts/env.sh installs by default:
# pyproject.toml's dependencies and its dev extra, torch/torchvision held by locks/constraints.in,
# resolved for Python 3.11 on Linux x86_64 (manylinux_2_28), with hashes. Pins already in the lock
# are kept where they still fit; extra arguments go to uv, e.g. --upgrade (move every pin to the
# newest release) or --upgrade-package ray. Needs uv (pip install uv) and access to PyPI.
# Run it after changing the dependencies in pyproject.toml, and commit the lock with that change.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then uv=(uv); else uv=(python3 -m uv); fi
lock=locks/requirements.lock
tmp="$lock.tmp"
trap 'rm -f "$tmp"' EXIT
[ -f "$lock" ] && cp "$lock" "$tmp"  # uv keeps the pins of the file it writes to where they still fit
"${uv[@]}" pip compile pyproject.toml --extra dev --constraint locks/constraints.in \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
    --no-header --quiet --output-file "$tmp" "$@"
{
    echo "# Exact versions for Python 3.11 on Linux x86_64, compiled from pyproject.toml (dependencies and"
    echo "# the dev extra) with torch and torchvision held by locks/constraints.in. scripts/env.sh installs"
    echo "# from this file by default (PIADE_UNLOCKED=1 resolves from pyproject.toml instead)."
    echo "# Do not edit by hand. To regenerate, from the repository root (needs uv: pip install uv):"
    echo "#   bash scripts/lock.sh"
    echo "# which runs"
    echo "#   uv pip compile pyproject.toml --extra dev --constraint locks/constraints.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --output-file locks/requirements.lock"
    echo "# and writes this header. Compiled with $("${uv[@]}" --version)."
    cat "$tmp"
} >"$lock"
echo "wrote $lock ($(grep -c '^[a-z0-9]' "$lock") pins)"
