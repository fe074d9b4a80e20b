# Sourced by run_all.sh and run_tests.sh. Sets PY to a Python that imports piade_lib.
#
# 1. An active virtualenv/conda environment that has piade_lib, torch and torchvision (found, not imported:
#    importing torch takes seconds) is used as is.
# 2. Otherwise ./.venv is created on first use and the project is installed into it: by default
#    the exact versions of locks/requirements.lock (pip install -r), then the project itself
#    (editable, with the dev extra) without resolving again (--no-deps). PIADE_UNLOCKED=1 instead
#    resolves the dependencies from pyproject.toml (pip install -e ".[dev]"), as happens anyway
#    (with a note) when the Python is not 3.11 on Linux x86_64, the lock's target. The install is
#    redone when pyproject.toml, the lock file or that choice changes.
# 3. Either way, the Jupyter kernel "piade" (display name "Python (piade)") is installed into that
#    environment (share/jupyter/kernels/piade) unless it is there already: the notebooks' metadata
#    and run_all.sh's papermill calls name it, and any JupyterLab that sees the environment's
#    kernels offers it.
# Set-up output goes to .venv/install.log; its tail is shown if the install fails.

# Installs the "piade" kernelspec into the environment of $PY (--sys-prefix) unless that environment
# already has one that starts this environment's Python.
piade_ensure_kernel() {
    if "$PY" - <<'PYEOF' >/dev/null 2>&1; then
import json, os, sys
spec = os.path.join(sys.prefix, "share", "jupyter", "kernels", "piade", "kernel.json")
argv0 = json.load(open(spec))["argv"][0]
sys.exit(0 if os.path.dirname(os.path.abspath(argv0)) == os.path.dirname(os.path.abspath(sys.executable)) else 1)
PYEOF
        return 0
    fi
    echo "[piade] installing the Jupyter kernel 'piade' into $("$PY" -c 'import sys; print(sys.prefix)')"
    if ! "$PY" -m ipykernel install --sys-prefix --name piade --display-name "Python (piade)" >/dev/null; then
        echo "[piade] error: could not install the Jupyter kernel 'piade' (python -m ipykernel install)" >&2
        return 1
    fi
}

piade_setup_env() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null 2>&1 \
        && [ "$(python -c 'import sys; print(sys.prefix)')" != "$root/.venv" ] \
        && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('piade_lib', 'torch', 'torchvision')))" >/dev/null 2>&1; then
        PY="$(command -v python)"
        echo "[piade] using the active environment: $(python -c 'import sys; print(sys.prefix)')"
        piade_ensure_kernel
        return
    fi
    local venv="$root/.venv"
    local stamp="$venv/.piade-installed"
    local lock="$root/locks/requirements.lock"
    local mode=locked
    if [ "${PIADE_UNLOCKED:-0}" != 0 ]; then mode=unlocked; fi
    # The lock is for Python 3.11 on Linux x86_64: elsewhere, resolve from pyproject.toml (and say so).
    local probe="$venv/bin/python" target
    [ -x "$probe" ] || probe="${PIADE_PYTHON:-python3}"
    if [ "$mode" = locked ] && target="$("$probe" -c 'import platform, sys; print(f"Python {sys.version_info[0]}.{sys.version_info[1]} on {platform.system()} {platform.machine()}")' 2>/dev/null)" \
        && [ "$target" != "Python 3.11 on Linux x86_64" ]; then
        echo "[piade] note: locks/requirements.lock is for Python 3.11 on Linux x86_64, $probe is $target: resolving from pyproject.toml instead (set PIADE_PYTHON to a Python 3.11 for the locked versions)"
        mode=unlocked
    fi
    if [ "$mode" = locked ] && [ ! -f "$lock" ]; then
        echo "[piade] error: the lock file $lock is missing; restore it (git checkout -- locks/requirements.lock) or set PIADE_UNLOCKED=1 to resolve from pyproject.toml." >&2
        return 1
    fi
    local want  # what was installed: the mode and the contents of pyproject.toml and the lock file
    want="$mode $( { cat "$root/pyproject.toml"; if [ -f "$lock" ]; then cat "$lock"; fi; } | sha256sum | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('piade_lib', 'torch', 'torchvision')))" >/dev/null 2>&1; then
        PY="$venv/bin/python"
        piade_ensure_kernel
        return
    fi
    local base_py="${PIADE_PYTHON:-python3}"
    if ! "$base_py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "[piade] error: $base_py is missing or older than Python 3.10; set PIADE_PYTHON to a Python >= 3.10." >&2
        return 1
    fi
    echo "[piade] setting up $venv ($mode: installs torch, torchvision and the project; a few minutes on first use)"
    if [ ! -x "$venv/bin/python" ]; then
        "$base_py" -m venv "$venv" || { echo "[piade] error: could not create $venv" >&2; return 1; }
    fi
    local log="$venv/install.log"
    : >"$log"
    if [ "$mode" = locked ]; then
        if ! "$venv/bin/python" -m pip install -q -r "$lock" >>"$log" 2>&1; then
            echo "[piade] error: pip install -r locks/requirements.lock failed in $venv (PIADE_UNLOCKED=1 resolves from pyproject.toml instead); last lines of $log:" >&2
            grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
            return 1
        fi
        if ! "$venv/bin/python" -m pip install -q --no-deps -e "$root[dev]" >>"$log" 2>&1; then
            echo "[piade] error: installing the project (editable, --no-deps) into $venv failed; last lines of $log:" >&2
            grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
            return 1
        fi
    elif ! "$venv/bin/python" -m pip install -q -e "$root[dev]" >>"$log" 2>&1; then
        echo "[piade] error: installing the project into $venv failed; last lines of $log:" >&2
        grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
        return 1
    fi
    PY="$venv/bin/python"
    piade_ensure_kernel || return 1
    echo "$want" >"$stamp"
    echo "[piade] environment ready: $venv"
}
