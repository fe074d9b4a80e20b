"""``piade train`` and ``piade evaluate``: one PIADE run folder, trained (or resumed, or skipped) and scored."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from piade_lib.cli import args as A

DEFAULT_OUTPUT = str(Path("results") / "cli")


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return key, value
    if isinstance(parsed, float) and not math.isfinite(parsed):  # json reads NaN and Infinity; no parameter takes them
        raise argparse.ArgumentTypeError(f"{key}={value}: expected a finite number")
    return key, parsed


def add_parsers(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="train (or resume, or skip when finished) one PIADE model, then evaluate it",
        description="Train one PIADE model on the normal train images of a one-class task, then "
        "score its test set. Re-running the same command returns at once when finished and "
        "resumes when interrupted. Unset values come from the preset (Table 1) and the dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_task_options(t)
    _add_training_options(t)
    _add_run_options(t)
    _add_checkpoint_options(t)
    _add_evaluation_options(t)
    t.set_defaults(handler=cmd_train)
    _add_evaluate_parser(sub)


def _add_task_options(t: argparse.ArgumentParser) -> None:
    """``piade train``'s options that choose the task and the model: dataset, class, protocol, preset, vectors."""
    t.add_argument(
        "--dataset",
        required=True,
        help="dataset name (cifar10, mnist, fashion_mnist, digits, mvtec, coil100, textures, folder)",
    )
    t.add_argument(
        "--class",
        dest="normal_class",
        required=True,
        help="normal class: a name or an index into the dataset's classes",
    )
    t.add_argument("--protocol", default=None, help="evaluation protocol (default: the dataset's: lsa, mvtec or gpnd)")
    t.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "authors_code"],
        help="paper = the IJNS 2020 paper as written; authors_code = the released code's choices",
    )
    t.add_argument("--vectors", type=int, default=2, choices=[1, 2], help="number of instantiation vectors")


def _add_training_options(t: argparse.ArgumentParser) -> None:
    """``piade train``'s training settings: the budget, the optimiser, the image size and the seed."""
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=A.EPOCHS, default=None, help="training epochs, >= 1 (preset: 400)")
    budget.add_argument(
        "--steps",
        type=A.STEPS,
        default=None,
        help="a budget of optimiser steps (>= 1) instead of "
        "epochs (on a CPU a budget buys steps: a small batch with many steps learns more per minute)",
    )
    t.add_argument(
        "--batch-size", type=A.TRAIN_BATCH, default=None, help="batch size, >= 2 (paper 120, authors_code 60)"
    )
    t.add_argument("--lr", type=A.LR, default=None, help="Adam learning rate, > 0 (preset: 1e-3)")
    t.add_argument(
        "--weight-decay",
        type=A.WEIGHT_DECAY,
        default=None,
        help="Adam weight decay, >= 0 (paper 1e-4, authors_code 1e-3)",
    )
    t.add_argument("--image-size", type=int, default=None, choices=[32, 120], help="image size (dataset default)")
    t.add_argument(
        "--seed",
        type=A.SEED,
        default=0,
        help="seed (0 to 4294967295) of the split, the initialisation and the shuffling",
    )


def _add_run_options(t: argparse.ArgumentParser) -> None:
    """``piade train``'s options of where and how the run goes: output, device, pretrained weights, data."""
    t.add_argument(
        "--output",
        type=A.output_folder("a folder for the results"),
        default=DEFAULT_OUTPUT,
        help="results root (a folder); the run folder is "
        "<output>/runs/<dataset>-<protocol>/<class>/<preset>-v<vectors>",
    )
    t.add_argument(
        "--device",
        type=A.device,
        default="auto",
        help="auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps, if this machine has it",
    )
    t.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ImageNet weights for the ResNet and the VGG11 (as in the paper); --no-pretrained for "
        "random initialisation (needed offline when the weights are not cached)",
    )
    t.add_argument(
        "--data-root",
        default=None,
        type=A.absolute_path,
        help="data folder (default: $PIADE_DATA, else ./data); recorded as an absolute path, so that evaluate "
        "finds it from any folder",
    )


def _add_checkpoint_options(t: argparse.ArgumentParser) -> None:
    """``piade train``'s checkpoint and compile options."""
    t.add_argument(
        "--checkpoint-every",
        type=A.CHECKPOINT_EVERY,
        default=None,
        help="write a resume checkpoint "
        "every N (>= 1) epochs (default: by wall clock, see --checkpoint-minutes, and after the last epoch)",
    )
    t.add_argument(
        "--checkpoint-minutes",
        type=A.CHECKPOINT_MINUTES,
        default=5.0,
        help="write a resume checkpoint "
        "when this many minutes (> 0) have passed since the last one (an interrupted run loses at most this)",
    )
    A.add_compile_option(t)
    t.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="arithmetic of the training step: auto = bf16/fp16 autocast on CUDA, float32 on the CPU; "
        "bf16 also on CPUs with native bf16 (see benchmarks/README.md); an execution setting like --device",
    )
    t.add_argument(
        "--threads",
        type=A.THREADS,
        default=None,
        help="CPU threads to train and score with (default: all cores); on a CPU the count changes float "
        "rounding, so pin it to get the same numbers again on machines of one kind",
    )
    t.add_argument("--keep-checkpoints", type=A.KEEP_CHECKPOINTS, default=2, help="epoch checkpoints kept (0 = all)")


def _add_evaluation_options(t: argparse.ArgumentParser) -> None:
    """``piade train``'s options of the data limits, the scoring, the protocol parameters and the run folder."""
    t.add_argument(
        "--limit-train", type=A.LIMIT_TRAIN, default=None, help="use at most N (>= 2) train images (smoke tests)"
    )
    t.add_argument(
        "--limit-test",
        type=A.LIMIT_TEST,
        default=None,
        help="use at most N (>= 1) test images, stratified (smoke tests)",
    )
    t.add_argument(
        "--n-bootstrap",
        type=A.N_BOOTSTRAP,
        default=1000,
        help="bootstrap resamples of the AUROC interval (0 = no interval)",
    )
    t.add_argument(
        "--eval-steps",
        type=A.EVAL_STEP,
        nargs="+",
        default=[],
        metavar="STEP",
        help="score the test set at these optimiser steps (>= 1) too (convergence.csv in the run folder)",
    )
    t.add_argument(
        "--param",
        action="append",
        type=_kv,
        default=[],
        metavar="KEY=VALUE",
        help="protocol parameter passed to one_class_task (repeatable; VALUE parsed as JSON if possible)",
    )
    t.add_argument("--variant", default=None, help="run folder name (default <preset>-v<vectors>)")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="when the run folder holds a different configuration, "
        "move it aside to <folder>.old-<timestamp> (never deleted) and start afresh",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_evaluate_parser(sub: Any) -> None:
    """The ``piade evaluate`` subcommand."""
    e = sub.add_parser(
        "evaluate",
        help="(re)score the test set of a trained run and write metrics.json",
        description="Score the test (and train) images of a finished run with its final "
        "checkpoint and write scores.csv, roc.csv and metrics.json (AUROC with a bootstrap interval).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("run_dir", help="a run folder (holds config.json and checkpoints/final.pt)")
    e.add_argument(
        "--n-bootstrap",
        type=A.N_BOOTSTRAP,
        default=None,
        help="bootstrap resamples (0 = no interval; default: the run's)",
    )
    e.add_argument(
        "--accept-changed-data",
        action="store_true",
        help="score the data as it is now even if it "
        "differs from the run's manifest.json (which is then rewritten); without it changed data is refused",
    )
    e.add_argument(
        "--device", type=A.device, default="auto", help="auto, cpu, cuda, cuda:N or mps, if this machine has it"
    )
    e.add_argument(
        "--data-root",
        default=None,
        type=A.absolute_path,
        help="where the run's data is now, if it moved (default: the folder the run recorded, else $PIADE_DATA, "
        "else ./data); checked against the run's manifest.json and recorded in its config.json",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bars")

    e.set_defaults(handler=cmd_evaluate)


def _print_metrics(metrics: dict[str, Any]) -> None:
    auc = metrics.get("auc")
    if auc is None:
        print(f"AUROC: undefined ({metrics.get('note', 'single class')})")
    else:
        lo, hi = metrics.get("auc_ci_low"), metrics.get("auc_ci_high")
        ci = (
            f" [{lo:.4f}, {hi:.4f}] ({metrics.get('ci_level', 0.95):.0%} bootstrap, n={metrics.get('n_bootstrap')})"
            if lo is not None and hi is not None
            else ""
        )
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
        print(
            f"normal test images: reconstruction MSE {metrics['normal_recon_mse']:.4f} vs train-mean image "
            f"{metrics['normal_mean_image_mse']:.4f} (ratio {ratio:.2f}: {verdict} the mean image"
            + ("" if ratio < 1 else "; train longer")
            + ")"
        )


def train_command(cfg: dict[str, Any], run_dir: Path) -> str | None:
    """The ``piade train`` command that trains (or resumes) the run of ``config.json`` ``cfg`` in
    ``run_dir``; None when the run was started with settings the command line does not take
    (preset overrides, as the readings profile's flips use)."""
    import shlex

    from piade_lib.engine.folders import piade_variant

    if cfg.get("preset_overrides") or cfg.get("amp") is False or cfg.get("num_workers"):
        return None
    words = ["piade", "train", "--dataset", cfg["dataset"], "--class", str(cfg["normal_class"])]
    opt = {
        "--protocol": cfg.get("protocol"),
        "--preset": cfg.get("preset"),
        "--vectors": cfg.get("n_vectors"),
        "--steps": cfg.get("steps"),
        "--epochs": None if cfg.get("steps") is not None else cfg.get("epochs"),
        "--batch-size": cfg.get("batch_size"),
        "--lr": cfg.get("lr"),
        "--weight-decay": cfg.get("weight_decay"),
        "--image-size": cfg.get("image_size"),
        "--seed": cfg.get("seed"),
        "--limit-train": cfg.get("limit_train"),
        "--limit-test": cfg.get("limit_test"),
        "--data-root": cfg.get("data_root"),
    }
    for flag, value in opt.items():
        if value is not None:
            words += [flag, str(value)]
    words += [f"--param={k}={json.dumps(v)}" for k, v in (cfg.get("protocol_params") or {}).items()]
    if not cfg.get("pretrained", False):
        words.append("--no-pretrained")
    if cfg.get("eval_steps"):
        words += ["--eval-steps", *map(str, cfg["eval_steps"])]
    variant = cfg.get("variant")
    default = piade_variant(str(cfg.get("preset")), int(cfg.get("n_vectors", 2)), int(cfg.get("seed", 0)))
    if variant and variant != default:
        words += ["--variant", str(variant)]
    in_layout = len(run_dir.parents) > 3 and run_dir.parents[2].name == "runs"  # <root>/runs/<task>/<class>/<variant>
    words += ["--output", str(run_dir.parents[3]) if in_layout else "<results root>"]
    return " ".join(shlex.quote(w) for w in words)


def unfinished_run_message(run_dir: Path, cfg: dict[str, Any]) -> str:
    """One line: the run in ``run_dir`` has not finished training, and how to finish it."""
    cmd = train_command(cfg, run_dir)
    how = (
        f"finish it with the command that trains it, which resumes where it stopped: {cmd}"
        if cmd
        else "finish it by running again the profile or notebook that started it (it resumes where it stopped)"
    )
    return f"the run in {run_dir} has not finished training (no checkpoints/final.pt yet); {how}"


def cmd_train(args: argparse.Namespace) -> int:
    from piade_lib.engine import files
    from piade_lib.engine.config import RunConfig
    from piade_lib.engine.lifecycle import train_run

    cfg = RunConfig(
        dataset=args.dataset,
        normal_class=args.normal_class,
        protocol=args.protocol,
        preset=args.preset,
        n_vectors=args.vectors,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        pretrained=args.pretrained,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        compile=args.compile,
        precision=args.precision,
        threads=args.threads,
        keep_checkpoints=args.keep_checkpoints,
        data_root=args.data_root,
        protocol_params=dict(args.param),
        n_bootstrap=args.n_bootstrap,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        variant=args.variant,
        steps=args.steps,
        eval_steps=args.eval_steps,
    )
    run_dir = train_run(cfg, args.output, progress=not args.quiet, overwrite=args.overwrite)
    print(f"run folder: {run_dir}")
    _print_metrics(files.read_json(run_dir / "metrics.json"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from piade_lib.engine import folders
    from piade_lib.engine.checkpoints import FINAL
    from piade_lib.engine.lifecycle import evaluate_run

    run_dir = Path(args.run_dir)
    cfg = folders.load_config(run_dir)
    if cfg.get("kind") != "baseline" and not (run_dir / "checkpoints" / FINAL).is_file():
        raise FileNotFoundError(unfinished_run_message(run_dir, cfg))
    metrics = evaluate_run(
        run_dir,
        n_bootstrap=args.n_bootstrap,
        device=args.device,
        progress=not args.quiet,
        accept_changed_data=args.accept_changed_data,
        data_root=args.data_root,
    )
    print(f"run folder: {run_dir}")
    _print_metrics(metrics)
    return 0
