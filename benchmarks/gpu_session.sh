#!/usr/bin/env bash
# The GPU checks and measurements that are still open (issue 9, benchmarks/README.md), in parts that each end
# well inside one 10-minute command on a lent H100. Run from the repository root:
#
#   benchmarks/gpu_session.sh PART... [--out DIR]
#
#   check          nvidia-smi; tests/test_gpu.py (no GPU wait in a step, one per epoch; CUDA graphs recorded,
#                  none skipped, same losses as eager; the stacked step) and tests/test_step_hot_path.py
#                  (~5 min with a cold compile cache: run it alone)
#   pack32         32x32, both presets, eager, x1 x4 x8                                            (~3 min)
#   pack32-graphs  32x32, both presets, compile reduce-overhead (CUDA graphs), x1 x4 x8            (~6 min cold)
#   pack32-mps     32x32, both presets, CUDA graphs under MPS, x4 x8                               (~3 min warm)
#   pack32-stack   32x32, both presets, CUDA graphs, 10 models stacked per process (stacked_step.py), x1 x2
#   pack120        120x120, both presets, eager and CUDA graphs, x2 x4                             (~5 min)
#   project        bench_packing --from-json over the JSON files in DIR: the projection
#
# DIR defaults to $OUT (the device tool's folder that comes back) or benchmarks/results/gpu. The machine's own
# python3 (with its torch) is used, PYTHON overrides it; packages it lacks (pytorch-msssim) are installed
# from the wheels in .whl/ when that folder exists (benchmarks/README.md says how to fill it).
# PACK_SECONDS (default 12) is each measurement's timed window.
set -euo pipefail

parts=()
out="${OUT:-benchmarks/results/gpu}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:?--out needs a folder}"; shift 2 ;;
        check | pack32 | pack32-graphs | pack32-mps | pack32-stack | pack120 | project) parts+=("$1"); shift ;;
        *) echo "gpu_session.sh: unknown part '$1' (check, pack32, pack32-graphs, pack32-mps, pack32-stack, pack120, project)" >&2
           exit 2 ;;
    esac
done
if [ ${#parts[@]} -eq 0 ]; then
    echo "usage: benchmarks/gpu_session.sh PART... [--out DIR]; parts: check pack32 pack32-graphs pack32-mps pack32-stack pack120 project" >&2
    exit 2
fi

py="${PYTHON:-python3}"
mkdir -p "$out"
if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/piade-site .whl/*.whl
    export PYTHONPATH="/tmp/piade-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
secs="${PACK_SECONDS:-12}"
pack() { "$py" benchmarks/bench_packing.py --device cuda --seconds "$secs" "$@"; }

for part in "${parts[@]}"; do
    echo "== $part ($(date -u +%H:%M:%S))"
    case "$part" in
        check)
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
            "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
            "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_step_hot_path.py 2>&1 | tee "$out/check.log"
            ;;
        pack32) pack --sizes 32 --packing 1 4 8 --json "$out/gpu-packing-32-eager.json" ;;
        pack32-graphs)
            pack --sizes 32 --packing 1 4 8 --compile reduce-overhead --json "$out/gpu-packing-32-graphs.json" ;;
        pack32-mps)
            pack --sizes 32 --packing 4 8 --compile reduce-overhead --mps --json "$out/gpu-packing-32-graphs-mps.json" ;;
        pack32-stack)
            pack --sizes 32 --packing 1 2 --stack 10 --compile reduce-overhead \
                --json "$out/gpu-packing-32-stack10-graphs.json" ;;
        pack120)
            pack --sizes 120 --packing 2 4 --json "$out/gpu-packing-120-eager.json"
            pack --sizes 120 --packing 2 4 --compile reduce-overhead --json "$out/gpu-packing-120-graphs.json"
            ;;
        project)
            shopt -s nullglob
            files=("$out"/gpu-packing-*.json)
            if [ ${#files[@]} -eq 0 ]; then
                echo "gpu_session.sh: no gpu-packing-*.json in $out to project from; run the pack parts first" >&2
                exit 1
            fi
            "$py" benchmarks/bench_packing.py --from-json "${files[@]}" --json "$out/projection.json"
            ;;
    esac
done
