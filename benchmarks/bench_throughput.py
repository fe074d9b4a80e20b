"""Training and scoring throughput of PIADE per preset and image size, and the projected wall time of
the paper's full protocol on this device.

    python benchmarks/bench_throughput.py                      # all presets, 32 and 120, auto device
    python benchmarks/bench_throughput.py --device cpu --batch-size 8 --iters 3 --warmup 1
    python benchmarks/bench_throughput.py --device cuda --json benchmarks/results-cuda.json

Throughput = batch size / fastest step time over ``--iters`` timed steps (after ``--warmup``
untimed ones); the median-based figure is printed beside it. On a machine shared with other jobs
the fastest step is the best estimate of the undisturbed speed; the projections use it.
Training = the library's own ``Trainer.step`` (forward + loss + backward + fused Adam, what ``piade train``
runs per batch: autocast bf16/fp16 on CUDA, float32 on the CPU, channels_last on both); scoring =
forward + ``PiadeLoss.per_image`` in eval mode under ``no_grad``. Inputs are random [0, 1] tensors:
data loading is not included (the datasets are cached in memory after their first pass). Random
initialisation (pretrained weights do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.engine.provenance import code_provenance, device_name, recorded_args
from piade_lib.engine.scoring import resolve_device
from piade_lib.engine.trainer import Trainer
from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model
from piade_lib.presets import PRESETS, get_preset  # noqa: E402

# The paper's full protocol: (name, image size, training images summed over all models, images scored).
# Scoring counts every test image plus every train image (train_run scores the train set for the
# threshold of `piade score`). Counts: docs of the protocols (shared/notes/protocols.md).
MVTEC_FIG4_TRAIN = {"bottle": 209, "capsule": 219, "hazelnut": 391, "carpet": 280, "leather": 245, "wood": 247}
MVTEC_FIG4_TEST = {"bottle": 83, "capsule": 132, "hazelnut": 110, "carpet": 117, "leather": 124, "wood": 79}
WORKLOADS: list[dict[str, Any]] = [
    {
        "name": "Table 2 (CIFAR-10, 10 models x 5,000 train)",
        "size": 32,
        "train": 10 * 5000,
        "score": 10 * (10000 + 5000),
    },
    {"name": "Table 3 (MVTec, 15 models, 3,629 train)", "size": 120, "train": 3629, "score": 1725 + 3629},
    {"name": "Table 4 (COIL-100, 100 models x 57 train)", "size": 120, "train": 100 * 57, "score": 100 * (30 + 57)},
    {
        "name": "Figure 4 (MVTec 6 categories, 1-vector models)",
        "size": 120,
        "train": sum(MVTEC_FIG4_TRAIN.values()),
        "score": sum(MVTEC_FIG4_TEST.values()) + sum(MVTEC_FIG4_TRAIN.values()),
    },
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(preset: str, size: int, device: torch.device, batch_size: int, iters: int, warmup: int) -> dict[str, Any]:
    """Images per second for training steps and for scoring, one preset and image size."""
    torch.manual_seed(0)
    model = build_model(preset, image_size=size, n_vectors=2, pretrained=False).to(device)
    loss_fn = PiadeLoss(preset, pretrained=False).to(device)
    p = get_preset(preset)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the library's own step (what `piade train` runs per batch): autocast, channels_last, fused Adam
    trainer = Trainer(
        model,
        loss_fn,
        torch.rand(batch_size, 3, size, size),
        lr=p.lr,
        weight_decay=p.weight_decay,
        batch_size=batch_size,
        seed=0,
    )
    x = trainer.images
    amp_dtype = trainer.precision.autocast_dtype

    def train_step() -> None:
        trainer.step(x)

    @torch.no_grad()
    def score_step() -> None:
        loss_fn.per_image(model(x).reconstruction.float(), x)

    out: dict[str, Any] = {
        "preset": preset,
        "size": size,
        "batch": batch_size,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
    }
    for mode, step in (("train", train_step), ("score", score_step)):
        model.train(mode == "train")
        for _ in range(warmup):
            step()
        _sync(device)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        # fastest step: the least disturbed by other processes sharing the machine (projections use it);
        # the median is reported beside it
        out[f"{mode}_img_s"] = batch_size / min(times)
        out[f"{mode}_img_s_median"] = batch_size / statistics.median(times)
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _loadavg() -> float | None:
    """1-minute load average (None where the OS has none): how busy the machine was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def projections(results: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """Projected hours of each workload per preset from the measured throughputs."""
    rows = []
    for preset in results["preset"].unique():
        total = 0.0
        for w in WORKLOADS:
            r = results[(results["preset"] == preset) & (results["size"] == w["size"])]
            if r.empty:
                continue
            train_h = w["train"] * epochs / float(r["train_img_s"].iloc[0]) / 3600
            score_h = w["score"] / float(r["score_img_s"].iloc[0]) / 3600
            total += train_h + score_h
            rows.append(
                {
                    "preset": preset,
                    "workload": w["name"],
                    "size": w["size"],
                    "train_images_x_epochs": w["train"] * epochs,
                    "scored_images": w["score"],
                    "train_hours": train_h,
                    "score_hours": score_h,
                    "total_hours": train_h + score_h,
                }
            )
        rows.append({"preset": preset, "workload": "all of the above", "total_hours": total})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per step (default: the preset's batch size on CUDA, 8 on the CPU)",
    )
    ap.add_argument("--iters", type=int, default=5, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    ap.add_argument("--presets", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS), help="presets to measure")
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 120], choices=[32, 120], help="image sizes")
    ap.add_argument("--epochs", type=int, default=400, help="epochs per model in the projection (Table 1: 400)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: torch's choice, usually the core count)",
    )
    ap.add_argument("--json", default=None, help="also write the measurements and projections to this JSON file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = _loadavg()
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            bs = args.batch_size or (get_preset(preset).batch_size if device.type == "cuda" else 8)
            print(f"measuring {preset} at {size}x{size}, batch {bs} ...", file=sys.stderr, flush=True)
            rows.append(measure(preset, size, device, bs, args.iters, args.warmup))
    results = pd.DataFrame(rows)
    proj = projections(results, args.epochs)
    name = device_name(device)
    load_after = _loadavg()
    print(
        f"\ndevice: {name}; torch {torch.__version__}; iters {args.iters}, warmup {args.warmup}; "
        f"1-min load average before/after: {load_before} / {load_after} on {os.cpu_count()} logical CPUs\n"
    )
    print(results.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nprojected wall time of the paper's protocol ({args.epochs} epochs per model), hours:\n")
    shown = proj.copy()
    for col in ("size", "train_images_x_epochs", "scored_images"):
        shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    for col in ("train_hours", "score_hours", "total_hours"):
        shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:,.1f}")
    print(shown.to_string(index=False))
    if args.json:
        payload = {
            "device": name,
            "torch": torch.__version__,
            "code": code_provenance(),
            "args": recorded_args(args),
            "cpu_count": os.cpu_count(),
            "load_average_before_after": [load_before, load_after],
            "throughput": results.to_dict(orient="records"),
            "projection_hours": proj.where(proj.notna(), None).to_dict(orient="records"),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
