"""``piade train`` and ``piade evaluate``: one PIADE run folder, trained (or resumed, or skipped) and scored."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = str(Path("results") / "cli")


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value




def add_parsers(sub: Any) -> None:
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
    t.add_argument("--checkpoint-every", type=int, default=None, help="write a resume checkpoint every N epochs "
                   "(default: by wall clock, see --checkpoint-minutes, and after the last epoch)")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0, help="write a resume checkpoint when this "
                   "many minutes have passed since the last one (an interrupted run loses at most this much)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only; compile time "
                   "is paid once per run)")
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

    t.set_defaults(handler=cmd_train)

    e = sub.add_parser("evaluate", help="(re)score the test set of a trained run and write metrics.json",
                       description="Score the test (and train) images of a finished run with its final "
                       "checkpoint and write scores.csv, roc.csv and metrics.json (AUROC with a bootstrap interval).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run_dir", help="a run folder (holds config.json and checkpoints/final.pt)")
    e.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    e.add_argument("--accept-changed-data", action="store_true", help="score the data as it is now even if it "
                   "differs from the run's manifest.json (which is then rewritten); without it changed data is refused")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--quiet", action="store_true", help="no progress bars")

    e.set_defaults(handler=cmd_evaluate)


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
    from piade_lib.engine import files
    from piade_lib.engine.config import RunConfig
    from piade_lib.engine.lifecycle import train_run

    cfg = RunConfig(dataset=args.dataset, normal_class=args.normal_class, protocol=args.protocol, preset=args.preset,
                    n_vectors=args.vectors, image_size=args.image_size, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                    pretrained=args.pretrained, device=args.device, checkpoint_every=args.checkpoint_every,
                    checkpoint_minutes=args.checkpoint_minutes, compile=args.compile,
                    keep_checkpoints=args.keep_checkpoints, data_root=args.data_root,
                    protocol_params=dict(args.param), n_bootstrap=args.n_bootstrap, limit_train=args.limit_train,
                    limit_test=args.limit_test, variant=args.variant, steps=args.steps, eval_steps=args.eval_steps)
    run_dir = train_run(cfg, args.output, progress=not args.quiet, overwrite=args.overwrite)
    print(f"run folder: {run_dir}")
    _print_metrics(files.read_json(run_dir / "metrics.json"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from piade_lib.engine.lifecycle import evaluate_run

    run_dir = Path(args.run_dir)
    metrics = evaluate_run(run_dir, n_bootstrap=args.n_bootstrap, device=args.device, progress=not args.quiet,
                           accept_changed_data=args.accept_changed_data)
    print(f"run folder: {run_dir}")
    _print_metrics(metrics)
    return 0
