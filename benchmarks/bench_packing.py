"""Aggregate training throughput of N PIADE runs packed onto one device (separate processes), per preset
and image size, and the projected wall time of the paper's protocol on 1 and 8 such devices.

    python benchmarks/bench_packing.py --device cuda --packing 1 2 4 8 --seconds 20 --json out.json
    python benchmarks/bench_packing.py --device cpu --sizes 32 --packing 1 2 --seconds 5     # a smoke run

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
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def _worker(
    preset: str, size: int, batch: int, device: str, seconds: float, compile_: bool | str, barrier: Any, queue: Any
) -> None:
    from piade_lib.engine.trainer import Trainer
    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    p = get_preset(preset)
    model = build_model(preset, image_size=size, n_vectors=2, pretrained=False).to(dev)
    loss_fn = PiadeLoss(preset, pretrained=False).to(dev)
    images = torch.rand(batch * 8, 3, size, size, device=dev)
    trainer = Trainer(
        model, loss_fn, images, lr=p.lr, weight_decay=p.weight_decay, batch_size=batch, seed=0, compile=compile_
    )
    t0 = time.time()
    trainer.train_epoch(last_step=10**9)  # warm-up (and compilation)
    warmup = time.time() - t0
    barrier.wait()
    start, done = time.time(), 0
    while time.time() - start < seconds:
        trainer.train_epoch(last_step=10**9)
        done += trainer.n_images
    elapsed = time.time() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    queue.put({"images": done, "seconds": elapsed, "warmup_seconds": warmup, "peak_gib": peak})


def measure(
    preset: str, size: int, n: int, batch: int, device: str, seconds: float, compile_: bool | str
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(preset, size, batch, device, seconds, compile_, barrier, queue))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds * 4 + 600) for _ in procs]
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
        "aggregate_img_s": total / window,
        "per_run_img_s": total / window / n,
        "warmup_seconds": max(r["warmup_seconds"] for r in results),
        "peak_gib_per_run": max((r["peak_gib"] or 0.0) for r in results) or None,
    }


def projection(frame: pd.DataFrame, devices: int) -> pd.DataFrame:
    """Projected hours of the paper profile's runs, per workload and preset, at the best packing."""
    rows = []
    for preset, group in frame.groupby("preset"):
        for name, size, models, n_train, n_test, presets in RUNS:
            g = group[group["size"] == size]
            if g.empty or preset not in presets:
                continue
            best = g.loc[g["aggregate_img_s"].idxmax()]
            work = models * (n_train * EPOCHS + (n_train + n_test) / 3.0)  # training-image equivalents
            per_run = n_train * EPOCHS + (n_train + n_test) / 3.0
            hours = max(work / devices / best["aggregate_img_s"], per_run / best["per_run_img_s"]) / 3600
            rows.append(
                {
                    "preset": preset,
                    "workload": name,
                    "size": size,
                    "models": models,
                    "packing": int(best["packing"]),
                    "aggregate_img_s": round(float(best["aggregate_img_s"]), 1),
                    f"hours_on_{devices}": round(hours, 3),
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 120], choices=[32, 120])
    ap.add_argument("--packing", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed window per measurement")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's (120 / 60)")
    ap.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="MODE",
        help="torch.compile the model in every run (optionally a mode, e.g. reduce-overhead)",
    )
    ap.add_argument("--json", default=None, help="write the measurements and projections here")
    args = ap.parse_args(argv)
    rows = []
    for preset in args.presets:
        batch = args.batch_size or get_preset(preset).batch_size
        for size in args.sizes:
            for n in args.packing:
                r = measure(preset, size, n, batch, args.device, args.seconds, args.compile)
                rows.append(r)
                print(
                    f"{preset:13s} {size:4d}px batch {batch:3d} x{n}: {r['aggregate_img_s']:9.1f} img/s in all, "
                    f"{r['per_run_img_s']:8.1f} per run (warm-up {r['warmup_seconds']:.0f} s, "
                    f"peak {r['peak_gib_per_run'] or 0:.1f} GiB per run)",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    out: dict[str, Any] = {
        "machine": {
            "device": torch.cuda.get_device_name(0)
            if args.device.startswith("cuda")
            else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
        },
        "args": vars(args),
        "measurements": rows,
    }
    for devices in (1, 8):
        proj = projection(frame, devices)
        if not proj.empty:
            total = proj[f"hours_on_{devices}"].sum()
            print(f"\nprojected paper protocol on {devices} device(s): {total:.2f} h (both presets, 400 epochs)")
            print(proj.to_string(index=False))
            out[f"projection_{devices}"] = {"hours": round(float(total), 3), "rows": proj.to_dict("records")}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
