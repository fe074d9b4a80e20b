"""How far bf16 training (``piade_lib.engine.precision``, precision "bf16") moves PIADE's loss from float32, on
real-looking images.

    python benchmarks/check_bf16_numerics.py --dataset mnist --data-root DATA --normal-class 3 \\
        --batch-size 60 --steps 50 --json benchmarks/results/bf16-numerics-mnist.json

For each preset, three copies of one randomly initialised model are trained from the same weights on
the same sequence of batches (normal training images of a one-class task):

* ``fp32``: float32, channels_last (the default of ``precision.resolve``): the reference;
* ``fp32_nchw``: float32 in the contiguous layout: a control that differs from the reference by
  float32 rounding only (oneDNN sums in another order), i.e. how far two equally valid float32 runs drift
  apart through this network;
* ``bf16``: the model's forward pass under CPU bf16 autocast (the loss stays float32).

Reported: the loss of the first batch with the initial weights (one forward pass, no update: the
precision's own error), the relative differences of the training loss to ``fp32`` at given steps and
averaged over the last 10 steps, and, after training, the mean anomaly score (``total``) of the test
images and the AUROC of each model, scored in float32 (as ``evaluate_run`` does) and, for the bf16
model, also with a bf16 forward pass.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.data import one_class_task  # noqa: E402
from piade_lib.engine import precision as prec  # noqa: E402
from piade_lib.engine.provenance import recorded_args  # noqa: E402
from piade_lib.model.losses import TERMS, PiadeLoss  # noqa: E402
from piade_lib.model.network import build_model  # noqa: E402
from piade_lib.presets import get_preset  # noqa: E402

CPU = torch.device("cpu")
VARIANTS = {"fp32": ("fp32", True), "fp32_nchw": ("fp32", False), "bf16": ("bf16", True)}


def stack(dataset: Any, limit: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), np.array([int(it["label"]) for it in items])


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("nan")


@torch.no_grad()
def scores(
    model: torch.nn.Module, loss_fn: PiadeLoss, images: torch.Tensor, settings: prec.StepPrecision, batch: int = 100
) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = prec.prepare_batch(images[i : i + batch], CPU, settings)
        with prec.autocast(CPU, settings):
            recon = model(x).reconstruction
        out.append(loss_fn.per_image(recon.float(), x)["total"])
    model.train()
    return torch.cat(out).numpy()


def check_preset(preset: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    task = one_class_task(
        args.dataset, args.normal_class, root=args.data_root, preset=preset, image_size=args.image_size
    )
    train_x, _ = stack(task.train, args.train_images)
    test_x, test_y = stack(task.test, args.test_images)
    size = int(train_x.shape[-1])
    log(
        f"{preset}: {args.dataset} class {args.normal_class}, {len(train_x)} train / {len(test_x)} test images, "
        f"{size}x{size}, standin={task.manifest.get('standin')}"
    )
    g = torch.Generator().manual_seed(0)
    batches: list[torch.Tensor] = []
    while len(batches) < args.steps:
        perm = torch.randperm(len(train_x), generator=g)
        batches += [perm[i : i + args.batch_size] for i in range(0, len(perm) - args.batch_size + 1, args.batch_size)]
    batches = batches[: args.steps]

    torch.manual_seed(0)
    base = build_model(preset, image_size=size)
    loss_fn = PiadeLoss(preset)
    p = get_preset(preset)
    out: dict[str, Any] = {
        "dataset": args.dataset,
        "normal_class": str(args.normal_class),
        "image_size": size,
        "standin": task.manifest.get("standin"),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "initial": {},
        "losses": {},
        "final": {},
    }
    for name, (precision, cl) in VARIANTS.items():
        settings = prec.resolve(CPU, precision, channels_last=cl)
        model = prec.prepare_model(copy.deepcopy(base), CPU, settings)
        lf = prec.prepare_loss(copy.deepcopy(loss_fn), CPU, settings)
        opt = prec.optimizer(model.parameters(), p.lr, p.weight_decay, CPU)
        model.train()
        losses = []
        t0 = time.perf_counter()
        for step, idx in enumerate(batches):
            x = prec.prepare_batch(train_x[idx], CPU, settings)
            with prec.autocast(CPU, settings):
                recon = model(x).reconstruction
            terms = lf.per_image(recon.float(), x)
            if step == 0:
                out["initial"][name] = {t: float(terms[t].detach().mean()) for t in TERMS}
            loss = terms["total"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - t0
        fp32_scores = scores(model, lf, test_x, prec.resolve(CPU, "fp32", channels_last=cl))
        final = {
            "train_seconds": seconds,
            "mean_test_score_fp32_forward": float(fp32_scores.mean()),
            "auroc_fp32_forward": float(roc_auc_score(test_y, fp32_scores)),
        }
        if precision == "bf16":
            own = scores(model, lf, test_x, settings)
            final |= {
                "mean_test_score_bf16_forward": float(own.mean()),
                "auroc_bf16_forward": float(roc_auc_score(test_y, own)),
                "max_rel_score_diff_bf16_vs_fp32_forward": float(
                    np.max(np.abs(own - fp32_scores) / np.abs(fp32_scores))
                ),
            }
        out["losses"][name] = losses
        out["final"][name] = final
        log(
            f"  {name}: {seconds:.0f} s, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"AUROC {final['auroc_fp32_forward']:.3f}"
        )
    ref = out["losses"]["fp32"]
    marks = sorted({1, 10, 25, args.steps} & set(range(1, args.steps + 1)))
    out["summary"] = {
        name: {
            "initial_rel_diff": {t: rel(out["initial"][name][t], out["initial"]["fp32"][t]) for t in TERMS},
            "loss_rel_diff_at_step": {str(s): rel(out["losses"][name][s - 1], ref[s - 1]) for s in marks},
            "last10_mean_loss_rel_diff": rel(statistics.mean(out["losses"][name][-10:]), statistics.mean(ref[-10:])),
            "max_loss_rel_diff": max(rel(a, b) for a, b in zip(out["losses"][name], ref)),
            "mean_test_score_rel_diff": rel(
                out["final"][name]["mean_test_score_fp32_forward"], out["final"]["fp32"]["mean_test_score_fp32_forward"]
            ),
            "auroc_diff": out["final"][name]["auroc_fp32_forward"] - out["final"]["fp32"]["auroc_fp32_forward"],
        }
        for name in VARIANTS
        if name != "fp32"
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-root", default=None, help="data root (else $PIADE_DATA, else ./data)")
    ap.add_argument("--normal-class", default="3")
    ap.add_argument("--image-size", type=int, default=None, help="default: the dataset's")
    ap.add_argument("--presets", nargs="+", default=["paper", "authors_code"])
    ap.add_argument("--batch-size", type=int, default=60)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-images", type=int, default=2000, help="first N normal training images")
    ap.add_argument("--test-images", type=int, default=500, help="first N test images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = {
        "torch": torch.__version__,
        "cpu_native_bf16": prec.cpu_has_native_bf16(),
        "args": recorded_args(args, omit=("json", "data_root")),
        "presets": {},
    }
    for preset in args.presets:
        results["presets"][preset] = r = check_preset(preset, args, log)
        print(
            f"\n{preset} ({r['dataset']} {r['normal_class']}, {r['image_size']}x{r['image_size']}, batch "
            f"{r['batch_size']}, {r['steps']} steps): relative difference to fp32 (channels_last)"
        )
        for name, s in r["summary"].items():
            init = s["initial_rel_diff"]
            print(
                f"  {name:10s} initial loss {init['total']:.2e} (mse {init['mse']:.1e}, perceptual "
                f"{init['perceptual']:.1e}, ssim {init['ssim_loss']:.1e}); training loss at steps "
                + ", ".join(f"{k}: {v:.1e}" for k, v in s["loss_rel_diff_at_step"].items())
                + f"; last 10 steps' mean {s['last10_mean_loss_rel_diff']:.1e}, max {s['max_loss_rel_diff']:.1e}; "
                f"mean test score {s['mean_test_score_rel_diff']:.1e}; AUROC {s['auroc_diff']:+.3f}"
            )
        print(
            "  AUROC (fp32 scoring): "
            + ", ".join(f"{n} {f['auroc_fp32_forward']:.3f}" for n, f in r["final"].items())
            + f"; bf16 model scored with bf16: {r['final']['bf16']['auroc_bf16_forward']:.3f} (max per-image score "
            f"difference to its fp32 scoring {r['final']['bf16']['max_rel_score_diff_bf16_vs_fp32_forward']:.1e})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
