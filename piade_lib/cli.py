"""The ``piade`` command: train, evaluate and score with PIADE run folders.

    piade train --dataset digits --class 0 --epochs 2 --no-pretrained
    piade evaluate results/cli/runs/digits-lsa/0/paper-v2
    piade score results/cli/runs/digits-lsa/0/paper-v2 my_images/ --output scores.csv --maps maps/
    piade download mnist --root data

``download`` fetches one of the paper's datasets into the data root, checks its checksums and
unpacks it (see docs/datasets.md). ``train`` is resumable: the same command again returns at once when the run has finished and
resumes from the last checkpoint when it was interrupted. ``score`` preprocesses new images exactly
like the run's training images (the data package's ``load_image_for_scoring``) and flags the ones
whose total score is above a threshold recorded in the run's metrics.json: by default the 95th
percentile of the total score on the normal *training* images (``--threshold-from test_normal``: on
the normal test images; ``--threshold``: a value of your own).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

DEFAULT_OUTPUT = os.path.join("results", "cli")


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piade", description="PIADE image anomaly detection: train, evaluate, score; "
                                     "download the paper's datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,score,download}")

    t = sub.add_parser("train", help="train (or resume, or skip when finished) one PIADE model, then evaluate it",
                       description="Train one PIADE model on the normal train images of a one-class task, then "
                       "score its test set. Re-running the same command returns at once when finished and "
                       "resumes when interrupted. Unset values come from the preset (Table 1) and the dataset.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", required=True, help="dataset name (cifar10, mnist, fashion_mnist, digits, mvtec, "
                   "coil100, textures, folder)")
    t.add_argument("--class", dest="normal_class", required=True, help="normal class: a name or an index into the "
                   "dataset's classes")
    t.add_argument("--protocol", default=None, help="evaluation protocol (default: the dataset's: lsa, mvtec or gpnd)")
    t.add_argument("--preset", default="paper", choices=["paper", "authors_code"],
                   help="paper = the IJNS 2020 paper as written; authors_code = the released code's choices")
    t.add_argument("--vectors", type=int, default=2, choices=[1, 2], help="number of instantiation vectors")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, help="training epochs (preset: 400)")
    budget.add_argument("--steps", type=int, default=None, help="a budget of optimiser steps instead of epochs (on "
                        "a CPU a budget buys steps: a small batch with many steps learns more per minute)")
    t.add_argument("--batch-size", type=int, default=None, help="batch size (paper 120, authors_code 60)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (preset: 1e-3)")
    t.add_argument("--weight-decay", type=float, default=None, help="Adam weight decay (paper 1e-4, authors_code 1e-3)")
    t.add_argument("--image-size", type=int, default=None, choices=[32, 120], help="image size (dataset default)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the shuffling")
    t.add_argument("--output", default=DEFAULT_OUTPUT, help="results root; the run folder is "
                   "<output>/runs/<dataset>-<protocol>/<class>/<preset>-v<vectors>")
    t.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageNet weights for the ResNet and the VGG11 (as in the paper); --no-pretrained for "
                   "random initialisation (needed offline when the weights are not cached)")
    t.add_argument("--data-root", default=None, help="data folder (default: $PIADE_DATA, else ./data)")
    t.add_argument("--checkpoint-every", type=int, default=1, help="write a checkpoint every N epochs")
    t.add_argument("--keep-checkpoints", type=int, default=2, help="epoch checkpoints kept (0 = all)")
    t.add_argument("--limit-train", type=int, default=None, help="use at most N train images (smoke tests)")
    t.add_argument("--limit-test", type=int, default=None, help="use at most N test images, stratified (smoke tests)")
    t.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the AUROC interval")
    t.add_argument("--eval-steps", type=int, nargs="+", default=[], metavar="STEP",
                   help="score the test set at these optimiser steps too (convergence.csv in the run folder)")
    t.add_argument("--param", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="protocol parameter passed to one_class_task (repeatable; VALUE parsed as JSON if possible)")
    t.add_argument("--variant", default=None, help="run folder name (default <preset>-v<vectors>)")
    t.add_argument("--overwrite", action="store_true", help="when the run folder holds a different configuration, "
                   "move it aside to <folder>.old-<timestamp> (never deleted) and start afresh")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="(re)score the test set of a trained run and write metrics.json",
                       description="Score the test (and train) images of a finished run with its final "
                       "checkpoint and write scores.csv, roc.csv and metrics.json (AUROC with a bootstrap interval).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run_dir", help="a run folder (holds config.json and checkpoints/final.pt)")
    e.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("score", help="score new images with a trained run",
                       description="Score images (files or folders, searched recursively) with a trained run. "
                       "Images are preprocessed exactly like the run's training images. Writes a CSV with the "
                       "loss terms, the total anomaly score and whether it is above the threshold.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("run_dir", help="a finished PIADE run folder")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    s.add_argument("--output", default="scores.csv", help="CSV to write (path, mse, perceptual, ssim_loss, total, "
                   "above_threshold)")
    s.add_argument("--maps", default=None, metavar="MAPS_DIR", help="also write a heat map (1 - SSIM between the "
                   "image and its reconstruction) over each image as PNG into this folder")
    s.add_argument("--threshold-from", default="train", choices=["train", "test_normal"],
                   help="which 95th percentile recorded in metrics.json decides above_threshold: of the normal "
                   "train images, or of the normal test images")
    s.add_argument("--threshold", type=float, default=None, help="explicit threshold on the total score (overrides "
                   "--threshold-from)")
    s.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--force", action="store_true", help="replace an existing --output file / map files")

    from .data.tasks import DOWNLOADABLE

    d = sub.add_parser("download", help="fetch one of the paper's datasets, check its checksums and unpack it",
                       description="Download a dataset into the data root, with a progress bar. Every file is "
                       "written to <name>.part and renamed only once its published checksum matches (md5 for "
                       "cifar10, mnist, fashion_mnist; size and sha256 for mvtec, coil100), so an interrupted or "
                       "corrupted download never passes as complete; a mismatching file is kept, not deleted. "
                       "Archives are extracted safely (no links, no paths outside the target folder). Files you "
                       "placed in the data root by hand are checked and unpacked instead of downloaded, and a "
                       "dataset that is already complete is left alone. Without network access the command "
                       "stops at once, naming the URLs, the files, their checksums and the folder to put them in.",
                       epilog="Layouts, sizes and checksums: docs/datasets.md. The stand-ins digits and textures "
                       "ship with scikit-learn and scikit-image: nothing to download.")
    d.add_argument("dataset", metavar="NAME", choices=DOWNLOADABLE, help=f"the dataset: {', '.join(DOWNLOADABLE)} "
                   "(mvtec is a 4.9 GB archive)")
    d.add_argument("--root", default=None, metavar="DIR", help="data root to download into (default: $PIADE_DATA, "
                   "else ./data); the run_all.sh profiles and `piade train --data-root` read from the same root")
    d.add_argument("--url", default=None, help="mvtec and coil100 only: download the archive from this URL instead "
                   "(the hosts have moved before); it is checked against the same sha256")
    return parser


# --------------------------------------------------------------------------------------------
def _print_metrics(metrics: dict[str, Any]) -> None:
    auc = metrics.get("auc")
    if auc is None:
        print(f"AUROC: undefined ({metrics.get('note', 'single class')})")
    else:
        lo, hi = metrics.get("auc_ci_low"), metrics.get("auc_ci_high")
        ci = f" [{lo:.4f}, {hi:.4f}] ({metrics.get('ci_level', 0.95):.0%} bootstrap, n={metrics.get('n_bootstrap')})" \
            if lo is not None and hi is not None else ""
        print(f"AUROC: {auc:.4f}{ci}")
    print(f"test images: {metrics.get('n_normal')} normal, {metrics.get('n_anomalous')} anomalous")
    terms = {k: v for k, v in (metrics.get("term_auc") or {}).items() if v is not None}
    if terms:
        print("AUROC per term: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
    if metrics.get("pixel_auroc") is not None:
        print(f"pixel AUROC: {metrics['pixel_auroc']:.4f}")
    ratio = metrics.get("recon_to_mean_image")
    if ratio is not None:
        verdict = "better than" if ratio < 1 else "NOT better than"
        print(f"normal test images: reconstruction MSE {metrics['normal_recon_mse']:.4f} vs train-mean image "
              f"{metrics['normal_mean_image_mse']:.4f} (ratio {ratio:.2f}: {verdict} the mean image"
              + ("" if ratio < 1 else "; train longer") + ")")


def cmd_train(args: argparse.Namespace) -> int:
    from . import runs
    from .train import RunConfig, train_run

    cfg = RunConfig(dataset=args.dataset, normal_class=args.normal_class, protocol=args.protocol, preset=args.preset,
                    n_vectors=args.vectors, image_size=args.image_size, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                    pretrained=args.pretrained, device=args.device, checkpoint_every=args.checkpoint_every,
                    keep_checkpoints=args.keep_checkpoints, data_root=args.data_root,
                    protocol_params=dict(args.param), n_bootstrap=args.n_bootstrap, limit_train=args.limit_train,
                    limit_test=args.limit_test, variant=args.variant, steps=args.steps, eval_steps=args.eval_steps)
    run_dir = train_run(cfg, args.output, progress=not args.quiet, overwrite=args.overwrite)
    print(f"run folder: {run_dir}")
    _print_metrics(runs.read_json(run_dir / "metrics.json"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import runs
    from .evaluate import compute_metrics, evaluate_run, write_results

    run_dir = Path(args.run_dir)
    cfg = runs.load_config(run_dir)
    if cfg.get("kind") == "baseline":
        scores_path = run_dir / "scores.csv"
        if not scores_path.is_file():
            raise FileNotFoundError(f"{scores_path} not found: run the baseline first (piade_lib.baselines.run_baseline)")
        scores = pd.read_csv(scores_path)
        nb = int(cfg.get("n_bootstrap", 1000) if args.n_bootstrap is None else args.n_bootstrap)
        old = runs.read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
        train_path = run_dir / "train_scores.csv"
        metrics = compute_metrics(scores, n_bootstrap=nb, seed=int(cfg.get("seed", 0)), terms=("total",),
                                  train_scores=pd.read_csv(train_path)["total"].to_numpy() if train_path.is_file() else None)
        for k in ("fitted", "fit_seconds"):
            if k in old:
                metrics[k] = old[k]
        write_results(run_dir, scores, metrics)
    else:
        metrics = evaluate_run(run_dir, n_bootstrap=args.n_bootstrap, device=args.device, progress=not args.quiet)
    print(f"run folder: {run_dir}")
    _print_metrics(metrics)
    return 0


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Image files named in ``inputs`` plus those found (recursively, sorted) in folders."""
    from .data.transforms import IMAGE_EXTENSIONS

    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither an image file nor a folder")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {list(inputs)}")
    return found


def save_map_png(image: Any, amap: Any, path: Path, title: str = "") -> None:
    """Heat map (``amap`` (S,S)) over ``image`` (3,S,S) in [0,1], with a colour bar, as PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import runs

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    img = image.permute(1, 2, 0).clamp(0, 1).numpy()
    axes[0].imshow(img)
    axes[0].set_title("image")
    axes[1].imshow(img)
    hm = axes[1].imshow(amap.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=max(float(amap.max()), 1e-6))
    axes[1].set_title("1 - SSIM")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(hm, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=8)
    runs.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from . import runs
    from .data.transforms import load_image_for_scoring
    from .evaluate import anomaly_map, load_trained, resolve_device

    run_dir = Path(args.run_dir)
    cfg = runs.load_config(run_dir)
    if cfg.get("kind") == "baseline":
        raise ValueError(f"{run_dir} is a baseline run; `piade score` scores with PIADE runs only")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; choose another --output or pass --force to replace it")
    threshold = args.threshold
    rule = "--threshold"
    if threshold is None:
        mpath = run_dir / "metrics.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath} not found: run `piade evaluate {run_dir}` first, or pass --threshold")
        thresholds = runs.read_json(mpath).get("thresholds") or {}
        threshold = thresholds.get(args.threshold_from)
        rule = f"95th percentile of the normal {args.threshold_from.replace('_', ' ')} scores"
        if threshold is None:
            raise ValueError(f"{mpath} records no '{args.threshold_from}' threshold; re-run `piade evaluate "
                             f"{run_dir}` or pass --threshold")
    device = resolve_device(args.device)
    model, loss_fn, cfg = load_trained(run_dir, device)
    from .model import preset_from_dict

    preset = preset_from_dict(cfg["preset_resolved"])
    paths = collect_images(args.inputs)
    maps_dir = Path(args.maps) if args.maps else None
    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        x = torch.stack([load_image_for_scoring(p, dataset=cfg["dataset"], image_size=int(cfg["image_size"]),
                                                preset=preset) for p in chunk]).to(device)
        with torch.no_grad():
            terms = loss_fn.per_image(model(x).reconstruction.float(), x)
        for i, p in enumerate(chunk):
            row = {"path": str(p), **{k: float(terms[k][i]) for k in ("mse", "perceptual", "ssim_loss", "total")}}
            row["above_threshold"] = bool(row["total"] > threshold)
            rows.append(row)
        if maps_dir is not None:
            maps = anomaly_map(model, x)
            for i, p in enumerate(chunk):
                target = maps_dir / f"{start + i:05d}_{p.stem}.png"
                if target.exists() and not args.force:
                    raise FileExistsError(f"{target} exists; choose another --maps folder or pass --force")
                save_map_png(x[i].cpu(), maps[i, 0], target, f"{p.name}: total {rows[start + i]['total']:.4f}")
    frame = pd.DataFrame(rows)
    runs.write_csv(out, frame)
    n_above = int(frame["above_threshold"].sum())
    print(f"scored {len(frame)} image(s) with {run_dir}; threshold {threshold:.6g} ({rule}); "
          f"{n_above} above it")
    print(f"scores: {out}" + (f"; maps: {maps_dir}" if maps_dir else ""))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data import data_root
    from .data.errors import DatasetDownloadError
    from .data.tasks import download

    try:
        folder = download(args.dataset, args.root, url=args.url)
    except (OSError, RuntimeError) as exc:  # anything the data package did not already explain
        if isinstance(exc, (DatasetDownloadError, FileNotFoundError, FileExistsError)):
            raise
        raise DatasetDownloadError(f"downloading {args.dataset} into {data_root(args.root)} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
    print(f"{args.dataset}: ready in {folder} (checksums verified)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``piade`` console script. Returns the exit status."""
    from .data.errors import PiadeDataError
    from .runs import CheckpointError, RunConfigMismatchError
    from .weights import PretrainedWeightsUnavailable

    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "score": cmd_score, "download": cmd_download}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted; nothing half-written was kept. Re-run the same command to resume.", file=sys.stderr)
        return 130
    except (RunConfigMismatchError, CheckpointError, PretrainedWeightsUnavailable, PiadeDataError,
            FileNotFoundError, FileExistsError, FloatingPointError, ValueError, KeyError) as exc:
        if os.environ.get("PIADE_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"piade {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
