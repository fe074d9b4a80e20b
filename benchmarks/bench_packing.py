"""Aggregate training throughput of N PIADE runs packed onto one device (separate processes), per preset
and image size, and the projected wall time of the paper's protocol on 1 and 8 such devices.

    python benchmarks/bench_packing.py --device cuda --packing 1 2 4 8 --seconds 20 --json out.json
    python benchmarks/bench_packing.py --device cpu --sizes 32 --packing 1 2 --seconds 5     # a smoke run
    python benchmarks/bench_packing.py --device cuda --sizes 32 --packing 4 8 --compile reduce-overhead --mps

Each process trains with the library's own :class:`piade_lib.engine.trainer.Trainer` (the train split
held on the device, batched there, loss terms read once per epoch, bf16 autocast and channels_last on
CUDA) on random images at the preset's batch size (120 paper, 60 authors_code; ``--batch-size``
overrides), so what is measured is what ``piade train`` runs, without data loading or checkpoints.
The processes start together (a barrier after their warm-up), train for ``--seconds`` and report the
images they trained; aggregate images/s = their sum / the window. The projection uses, per preset and
size, the packing with the best aggregate throughput: 400 epochs of every training image of
the paper profile's 176 PIADE runs (configs/paper.yaml), plus one scoring pass (test + train images) counted at a third
of a training step's cost. On 8 devices the runs are independent, so the wall time is the larger of
(work / 8 devices) and the longest single run at its packed per-run speed.

``--mps`` runs the measurement under NVIDIA's Multi-Process Service: a control daemon of its own (its pipe
and log folders in a temporary folder, so nothing of the machine's is touched), started before the
training processes and told to quit after them. Without MPS the packed processes' kernels take turns on
the GPU; with it they run side by side, which is what small, latency-bound 32x32 steps need.

``--stack K`` (an experiment) trains K models in each process as one batched model
(benchmarks/stacked_step.py): each kernel does K models' work at each model's own batch. Images/s then
count every model's images, and the projection divides each run's start-up among the K.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.cli.args import add_compile_option  # noqa: E402
from piade_lib.engine.provenance import code_provenance, device_name, portable, recorded_args  # noqa: E402
from piade_lib.presets import PRESETS, get_preset  # noqa: E402

# The PIADE runs of the paper profile (configs/paper.yaml; 176 models): (name, image size, models,
# train images per model, test images per model, presets). Counts: the protocols of each table.
RUNS: list[tuple[str, int, int, int, int, tuple[str, ...]]] = [
    ("Table 2: CIFAR-10", 32, 10, 5000, 10000, ("paper", "authors_code")),
    ("ICPR: MNIST", 32, 10, 6000, 10000, ("paper",)),
    ("ICPR: Fashion-MNIST", 32, 10, 6000, 10000, ("paper",)),
    ("Table 3: MVTec AD (15 categories, 3,629 train in all)", 120, 15, 242, 115, ("paper", "authors_code")),
    ("Figure 4: 1-vector models (6 MVTec categories, 1,591 train in all)", 120, 6, 265, 108, ("paper",)),
    ("Table 4: COIL-100", 120, 100, 57, 30, ("paper",)),
]
EPOCHS = 400


def _epoch_fn(preset: str, size: int, batch: int, dev: torch.device, compile_: bool | str, stack: int):
    """The process's training, as a function that trains one epoch of 8 batches per model and returns the
    images it trained: a :class:`Trainer` (one model), or with ``stack`` > 1 a :class:`StackedStep` of that
    many models (benchmarks/stacked_step.py), with the Trainer's epoch order and its one read per epoch."""
    from piade_lib.engine.trainer import Trainer
    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import build_model

    p = get_preset(preset)
    loss_fn = PiadeLoss(preset, pretrained=False).to(dev)
    n = batch * 8
    if stack == 1:
        model = build_model(preset, image_size=size, n_vectors=2, pretrained=False).to(dev)
        images = torch.rand(n, 3, size, size, device=dev)
        trainer = Trainer(
            model, loss_fn, images, lr=p.lr, weight_decay=p.weight_decay, batch_size=batch, seed=0, compile=compile_
        )

        def train_epoch() -> int:
            trainer.train_epoch(last_step=10**9)
            return n

        return train_epoch

    from stacked_step import StackedStep  # beside this script

    models = [build_model(preset, image_size=size, n_vectors=2, pretrained=False) for _ in range(stack)]
    step = StackedStep(models, loss_fn, lr=p.lr, weight_decay=p.weight_decay, device=dev, compile=compile_)
    images = torch.rand(stack, n, 3, size, size, device=dev)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> int:
        order = torch.randperm(n, generator=generator).to(dev)
        sums = torch.zeros(stack, device=dev)
        for b in range(8):
            sums += step.step(images.index_select(1, order[b * batch : (b + 1) * batch]))
        sums.tolist()  # the epoch's one read, as Trainer.train_epoch
        return stack * n

    return epoch


def _worker(
    preset: str,
    size: int,
    batch: int,
    device: str,
    seconds: float,
    compile_: bool | str,
    barrier: Any,
    queue: Any,
    stack: int = 1,
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)  # before any computing, so the process never starts more
    torch.manual_seed(0)
    dev = torch.device(device)
    epoch = _epoch_fn(preset, size, batch, dev, compile_, stack)
    t0 = time.time()
    epoch()  # warm-up (and compilation)
    warmup = time.time() - t0
    barrier.wait()
    start, done = time.time(), 0
    while time.time() - start < seconds:
        done += epoch()
    elapsed = time.time() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    queue.put({"images": done, "seconds": elapsed, "warmup_seconds": warmup, "peak_gib": peak})


def _collect(procs: list[Any], queue: Any, deadline: float) -> list[dict[str, Any]]:
    """One report from every process, or SystemExit as soon as one has died without reporting (its exit
    code named; the others are stopped) or the deadline passed: never a wait for a process that is gone."""
    results: list[dict[str, Any]] = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=1.0))
            continue
        except Empty:
            pass
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead or time.time() > deadline:
            for p in procs:
                p.terminate()
            why = f"a training process exited with code {dead[0].exitcode}" if dead else "the processes timed out"
            raise SystemExit(f"bench_packing: {why} before reporting; its error is printed above")
    return results


MPS_CONTROL = "nvidia-cuda-mps-control"


@contextlib.contextmanager
def mps_daemon(enabled: bool) -> Iterator[dict[str, str]]:
    """NVIDIA's MPS control daemon for the block, with its pipe and log folders in a temporary folder: the
    processes started inside the block (they inherit ``os.environ``) are its clients. The daemon is told to
    quit at the end, also when the block fails, and the environment is restored. SystemExit with one line
    when the daemon cannot be started. Yields the variables set (none when not ``enabled``)."""
    if not enabled:
        yield {}
        return
    control = shutil.which(MPS_CONTROL)
    if control is None:
        raise SystemExit(
            f"bench_packing: --mps needs NVIDIA's {MPS_CONTROL} on the PATH (it comes with the CUDA driver); "
            "run without --mps"
        )
    with tempfile.TemporaryDirectory(prefix="piade-mps-") as tmp:
        env = {"CUDA_MPS_PIPE_DIRECTORY": str(Path(tmp, "pipe")), "CUDA_MPS_LOG_DIRECTORY": str(Path(tmp, "log"))}
        for folder in env.values():
            Path(folder).mkdir()
        daemon_env = {**os.environ, **env}
        started = subprocess.run([control, "-d"], env=daemon_env, capture_output=True, text=True, timeout=60)
        if started.returncode != 0:
            why = (started.stderr or started.stdout).strip().splitlines()
            raise SystemExit(
                f"bench_packing: {MPS_CONTROL} -d exited with code {started.returncode}"
                f"{': ' + why[-1] if why else ''}; run without --mps"
            )
        before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            subprocess.run([control], input="quit\n", env=daemon_env, capture_output=True, text=True, timeout=60)


def threads_per_process(n: int) -> int:
    """The machine's cores shared among ``n`` packed processes, at least 1 each. Left to torch's default,
    every process starts a thread per core, and on a CPU the packed processes then fight over the cores:
    measured on 2 cores, 2 processes (paper preset, 32x32, batch 8), 18.6-20.5 img/s in all with 2 threads
    each against 65.1-73.0 with 1 (benchmarks/results/cpu-packing-threads-32.json)."""
    return max(1, (os.cpu_count() or 1) // n)


def measure(
    preset: str,
    size: int,
    n: int,
    batch: int,
    device: str,
    seconds: float,
    compile_: bool | str,
    mps: bool = False,
    stack: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    threads = threads or threads_per_process(n)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(preset, size, batch, device, seconds, compile_, barrier, queue, stack, threads)
        )
        for _ in range(n)
    ]
    with mps_daemon(mps):
        for p in procs:
            p.start()
        results = _collect(procs, queue, deadline=time.time() + seconds * 4 + 600)
        for p in procs:
            p.join()
    window = max(r["seconds"] for r in results)
    total = sum(r["images"] for r in results)
    return {
        "preset": preset,
        "size": size,
        "batch": batch,
        "packing": n,
        "compile": compile_,
        "mps": mps,
        "stack": stack,
        "threads_per_run": threads,
        "aggregate_img_s": total / window,
        "per_run_img_s": total / window / (n * stack),
        "warmup_seconds": max(r["warmup_seconds"] for r in results),
        "peak_gib_per_run": max((r["peak_gib"] or 0.0) for r in results) or None,
    }


def projection(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper profile's runs per workload and preset at the best packing (of all the measurements in
    ``frame``, eager and compiled alike): ``device_hours``, the workload's hours on one device, and
    ``run_hours``, one run's hours at its packed speed. Each run also pays its start-up: the measured
    warm-up of that packing (model built, first epoch, and compilation when compiled: seconds when
    inductor's cache already holds the graph, about a minute when it does not), packed runs starting
    theirs side by side."""
    rows = []
    for preset, group in frame.groupby("preset"):
        for name, size, models, n_train, n_test, presets in RUNS:
            g = group[group["size"] == size]
            if g.empty or preset not in presets:
                continue
            best = g.loc[g["aggregate_img_s"].idxmax()]
            per_run = n_train * EPOCHS + (n_train + n_test) / 3.0  # training-image equivalents
            start = float(best.get("warmup_seconds", 0.0) or 0.0)
            at_once = int(best["packing"]) * int(best.get("stack", 1) or 1)  # models training side by side
            work = models * per_run / best["aggregate_img_s"] + models * start / at_once
            rows.append(
                {
                    "preset": preset,
                    "workload": name,
                    "size": size,
                    "models": models,
                    "packing": int(best["packing"]),
                    "compile": best.get("compile", False) or False,
                    "mps": bool(best.get("mps", False) or False),
                    "stack": int(best.get("stack", 1) or 1),
                    "aggregate_img_s": round(float(best["aggregate_img_s"]), 1),
                    "start_s": round(start, 1),
                    "device_hours": round(work / 3600, 3),
                    "run_hours": round((per_run / best["per_run_img_s"] + start) / 3600, 3),
                }
            )
    return pd.DataFrame(rows)


def hours_on(proj: pd.DataFrame, devices: int) -> float:
    """Wall hours of all the projected runs on ``devices`` devices: the runs are independent (the Ray
    executor places each anywhere), so the larger of the work shared out and the longest single run."""
    return max(float(proj["device_hours"].sum()) / devices, float(proj["run_hours"].max()))


def _saved_measurements(paths: list[str]) -> list[dict[str, Any]]:
    """The measurements of the given ``--json`` files, in order; SystemExit with the file named when one is
    missing or holds none."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            rows += json.loads(Path(path).read_text())["measurements"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"--from-json {path}: not a file of bench_packing.py --json measurements ({exc})"
            ) from None
    return rows


def _measure_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every preset, size and packing of the command line, measured and printed one after another."""
    rows = []
    for preset in args.presets:
        batch = args.batch_size or get_preset(preset).batch_size
        for size in args.sizes:
            for n, stack, threads in [(n, k, t) for n in args.packing for k in args.stack for t in args.threads]:
                r = measure(preset, size, n, batch, args.device, args.seconds, args.compile, args.mps, stack, threads)
                rows.append(r)
                stacked = f" ({stack} models stacked per process)" if stack > 1 else ""
                print(
                    f"{preset:13s} {size:4d}px batch {batch:3d} x{n}{stacked}{' MPS' if args.mps else ''}: "
                    f"{r['aggregate_img_s']:9.1f} img/s in all, "
                    f"{r['per_run_img_s']:8.1f} per run ({r['threads_per_run']} CPU thread(s) each, "
                    f"warm-up {r['warmup_seconds']:.0f} s, "
                    f"peak {r['peak_gib_per_run'] or 0:.1f} GiB per run)",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 120], choices=[32, 120])
    ap.add_argument("--packing", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed window per measurement")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's (120 / 60)")
    add_compile_option(ap)  # as `piade train --compile`, in every run
    ap.add_argument(
        "--mps", action="store_true", help="run the packed processes under NVIDIA's MPS (a daemon of its own; CUDA)"
    )
    ap.add_argument(
        "--stack",
        type=int,
        nargs="+",
        default=[1],
        metavar="K",
        help="train K models per process as one batched model (benchmarks/stacked_step.py; an experiment); "
        "several values are measured one after another",
    )
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[None],
        metavar="T",
        help="CPU threads per process (default: the machine's cores divided among the packed processes, at least "
        "1); several values are measured one after another",
    )
    ap.add_argument("--json", default=None, help="write the measurements and projections here")
    ap.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        metavar="FILE",
        help="measure nothing: project from the measurements of these files (written by --json), together",
    )
    args = ap.parse_args(argv)
    bad_threads = [t for t in args.threads if t is not None and t < 1]
    if bad_threads:
        ap.error(f"--threads is the CPU threads per process, at least 1; got {bad_threads[0]}")
    if min(args.stack) < 1:
        ap.error(f"--stack is the number of models per process, at least 1; got {min(args.stack)}")
    if args.mps and not args.device.startswith("cuda") and args.from_json is None:
        ap.error(f"--mps shares an NVIDIA GPU between processes; --device is {args.device}")
    rows = _measure_all(args) if args.from_json is None else _saved_measurements(args.from_json)
    frame = pd.DataFrame(rows)
    out: dict[str, Any] = {
        "machine": {"device": device_name(args.device), "cpu_count": os.cpu_count()}
        if args.from_json is None
        else {"from_json": portable(args.from_json)},
        "code": code_provenance(),
        "args": recorded_args(args),
        "measurements": rows,
    }
    proj = projection(frame) if not frame.empty else pd.DataFrame()
    if not proj.empty:
        print("\nthe paper protocol (both presets, 400 epochs) at the best measured setting per preset and size:")
        print(proj.to_string(index=False))
        out["projection"] = {"rows": proj.to_dict("records")}
        for devices in (1, 8):
            total = hours_on(proj, devices)
            print(f"projected on {devices} device(s): {total:.2f} h")
            out["projection"][f"hours_on_{devices}"] = round(total, 3)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
