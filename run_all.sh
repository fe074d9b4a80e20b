#!/usr/bin/env bash
# Regenerates the paper's Tables 2-4 and Figures 3-4 for one profile (configs/<profile>.yaml):
# checks that the profile's datasets and weights are available, then executes the notebooks
# with papermill into results/<profile>/notebooks/ and writes results/<profile>/README.md.
#
#   ./run_all.sh            # the quick profile: offline stand-in data, about 6 minutes on a 2-core CPU
#   ./run_all.sh paper      # the paper's datasets, ImageNet weights, 400 epochs (a GPU job: hours on
#                           # one H100, weeks on a CPU; benchmarks/README.md)
#   ./run_all.sh path/to/profile.yaml
#
# Environment: PIADE_DATA (data root, default ./data), PIADE_RESULTS (results folder, default
# the profile's results_root, results/<profile>), TORCH_HOME (pretrained weights cache).
# Finished runs are skipped and interrupted ones resumed (the engine does this), so running the
# same command again continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$#" -gt 1 ]; then
    echo "usage: ./run_all.sh [profile]   (one argument at most)" >&2
    exit 2
fi
profile="${1:-quick}"

# An unknown profile name is refused at once, before any environment set-up.
case "$profile" in
    *.yaml | *.yml) [ -f "$profile" ] || { echo "[piade] error: profile file $profile does not exist" >&2; exit 2; } ;;
    *)
        if [ ! -f "configs/$profile.yaml" ]; then
            valid="$(for f in configs/*.yaml; do basename "$f" .yaml; done | tr '\n' ' ')"
            echo "[piade] error: unknown profile '$profile'; valid profiles: ${valid}(configs/*.yaml)" >&2
            echo "usage: ./run_all.sh [profile]" >&2
            exit 2
        fi
        ;;
esac

source scripts/env.sh
piade_setup_env
export PYTHONUNBUFFERED=1

# Validate the profile and check its datasets and weights BEFORE anything is trained:
# exit 2 for an invalid profile, 1 (with instructions) when data or weights are missing.
echo "[piade] profile: $profile"
rc=0
results_root="$("$PY" -m piade_lib.cli profile prepare "$profile")" || rc=$?
if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 2 ] && exit 2
    echo "[piade] stopped before training: fix the above and run ./run_all.sh $profile again." >&2
    exit "$rc"
fi
results_root="${PIADE_RESULTS:-$results_root}"
echo "[piade] results: $results_root"

start=$(date +%s)
mkdir -p "$results_root/notebooks"
# One ./run_all.sh per results root: a second one would find the first one's runs busy, fail them and
# overwrite its rendered notebooks. The lock (flock, util-linux) is held until this script ends; the file
# holds who has it. Where flock is missing, each run folder's own lock still keeps the runs intact.
if command -v flock >/dev/null 2>&1; then
    lockfile="$results_root/.run_all.lock"
    exec 9>>"$lockfile"
    if ! flock -n 9; then
        echo "[piade] error: another ./run_all.sh is writing $results_root ($(cat "$lockfile" 2>/dev/null || echo "holder unknown")); wait for it to finish, or give this one another folder with PIADE_RESULTS=..." >&2
        exit 1
    fi
    echo "./run_all.sh $profile, pid $$, since $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$lockfile"
fi
export PIADE_RUN_ALL="./run_all.sh $profile (pid $$)"  # named by a run folder's lock while a notebook holds it
params_dir="$(mktemp -d)"
trap 'rm -rf "$params_dir"' EXIT
interrupted=0
trap 'interrupted=1' INT  # Ctrl-C: papermill stops the notebook; then say how to go on, not "failed"

notebooks=(notebooks/[0-9][0-9]_*.ipynb)
"$PY" -m piade_lib.cli profile params "$profile" "${notebooks[@]}" --results-root "$results_root" --out-dir "$params_dir"
n=${#notebooks[@]}
i=0
for nb in "${notebooks[@]}"; do
    i=$((i + 1))
    name="$(basename "$nb")"
    out="$results_root/notebooks/$name"
    params="$params_dir/${name%.ipynb}.yaml"
    echo "[piade] [$i/$n] $name -> $out   ($(($(date +%s) - start)) s elapsed)"
    status=0
    "$PY" -m papermill "$nb" "$out" -f "$params" --kernel piade --cwd . \
        --log-output --no-progress-bar --request-save-on-cell-execute || status=$?
    # checked whether or not the notebook failed: an interrupt that reaches this script but not the
    # notebook (kill -INT of the script alone) lets the notebook run to its end; the run stops after it
    if [ "$interrupted" -ne 0 ]; then
        echo "[piade] interrupted in $name; run ./run_all.sh $profile again to go on: finished runs are skipped and interrupted ones resume from their last checkpoint" >&2
        exit 130
    fi
    if [ "$status" -ne 0 ]; then
        echo "[piade] error: notebook $name failed; the rendered notebook with the error is $out" >&2
        exit 1
    fi
done

wall=$(($(date +%s) - start))
"$PY" -m piade_lib.cli report readme "$profile" --results-root "$results_root" --wall-time "$wall"
echo "[piade] done in ${wall} s: $results_root/README.md, tables/, figures/, notebooks/"
