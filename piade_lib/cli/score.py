"""``piade score``: score new images with a trained run, optionally writing heat maps."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from piade_lib.cli import args as A


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "score",
        help="score new images with a trained run",
        description="Score images (files or folders, searched recursively) with a trained run. "
        "Images are preprocessed exactly like the run's training images. Writes a CSV with the "
        "loss terms, the total anomaly score, whether it is above the threshold and a status "
        "('ok', or why the image could not be read: such images get empty scores, are listed on "
        "the console and the others are still scored; --strict stops instead).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("run_dir", help="a finished PIADE run folder")
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    s.add_argument(
        "--output",
        type=A.output_file("the CSV file to write"),
        default="scores.csv",
        help="CSV to write (path, mse, perceptual, ssim_loss, total, above_threshold, status)",
    )
    s.add_argument(
        "--maps",
        type=A.output_folder("a folder for the heat maps"),
        default=None,
        metavar="MAPS_DIR",
        help="also write a heat map (1 - SSIM between the image and its reconstruction) over each "
        "image as PNG into this folder",
    )
    s.add_argument(
        "--threshold-from",
        default="train",
        choices=["train", "test_normal"],
        help="which 95th percentile recorded in metrics.json decides above_threshold: of the normal "
        "train images, or of the normal test images",
    )
    s.add_argument(
        "--threshold",
        type=A.THRESHOLD,
        default=None,
        help="explicit threshold on the total score, a finite number (overrides --threshold-from)",
    )
    s.add_argument("--batch-size", type=A.SCORE_BATCH, default=32, help="images per forward pass (>= 1)")
    s.add_argument(
        "--device", type=A.device, default="auto", help="auto, cpu, cuda, cuda:N or mps, if this machine has it"
    )
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first image that cannot be read (exit 2, "
        "nothing scored or written) instead of reporting it in the status column and scoring the others",
    )
    s.add_argument("--force", action="store_true", help="replace an existing --output file / map files")

    s.set_defaults(handler=cmd_score)


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Image files named in ``inputs`` plus those found (recursively, sorted) in folders."""
    from piade_lib.data.transforms import IMAGE_EXTENSIONS

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

    from piade_lib.engine import files

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
    files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


SCORE_COLUMNS = ("path", "mse", "perceptual", "ssim_loss", "total", "above_threshold", "status")
TERM_COLUMNS = ("mse", "perceptual", "ssim_loss", "total")


def unreadable_reason(exc: BaseException) -> str:
    """Why an image could not be read, in one line (the decoder's own error when there is one)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from piade_lib.data.transforms import load_image_for_scoring
    from piade_lib.engine import files
    from piade_lib.engine.scoring import load_trained, resolve_device
    from piade_lib.model.network import preset_from_dict

    # ---- everything that can be refused is refused before an image is scored or a file written ----
    run_dir = Path(args.run_dir)
    cfg = _scorable_config(run_dir)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; choose another --output or pass --force to replace it")
    threshold, rule = _choose_threshold(args, run_dir)
    paths = collect_images(args.inputs)
    maps_dir = Path(args.maps) if args.maps else None
    targets = _map_targets(paths, maps_dir, force=args.force)
    preset = preset_from_dict(cfg["preset_resolved"])

    def load(p: Path) -> torch.Tensor:
        return load_image_for_scoring(p, dataset=cfg["dataset"], image_size=int(cfg["image_size"]), preset=preset)

    if args.strict:  # read every image first: the first unreadable one stops before anything is written
        _read_all_or_refuse(paths, load)

    device = resolve_device(args.device)
    model, loss_fn, cfg = load_trained(run_dir, device)
    rows = _score_images(
        paths, load, model, loss_fn, device, threshold, args.batch_size, targets if maps_dir is not None else None
    )
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    files.write_csv(out, frame)
    return _summarise(frame, run_dir, threshold, rule, out, maps_dir)


def _scorable_config(run_dir: Path) -> dict[str, Any]:
    """``run_dir``'s config.json; refuses a baseline run and a run without its final checkpoint."""
    from piade_lib.cli.train import unfinished_run_message
    from piade_lib.engine import folders
    from piade_lib.engine.checkpoints import FINAL

    cfg = folders.load_config(run_dir)
    if cfg.get("kind") == "baseline":
        raise ValueError(f"{run_dir} is a baseline run; `piade score` scores with PIADE runs only")
    if not (run_dir / "checkpoints" / FINAL).is_file():
        raise FileNotFoundError(unfinished_run_message(run_dir, cfg))
    return cfg


def _choose_threshold(args: argparse.Namespace, run_dir: Path) -> tuple[float, str]:
    """The threshold on the total score and the rule that chose it: --threshold, else the run's metrics.json."""
    from piade_lib.engine import files

    if args.threshold is not None:
        return args.threshold, "--threshold"
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise FileNotFoundError(
            f"{mpath} not found: the run is trained but not evaluated; run `piade evaluate "
            f"{run_dir}` first, or pass --threshold"
        )
    metrics = files.read_json(mpath)
    thresholds = (metrics.get("thresholds") if isinstance(metrics, dict) else None) or {}
    threshold = thresholds.get(args.threshold_from) if isinstance(thresholds, dict) else None
    rule = f"95th percentile of the normal {args.threshold_from.replace('_', ' ')} scores"
    if threshold is None:
        raise ValueError(
            f"{mpath} records no '{args.threshold_from}' threshold; re-run `piade evaluate "
            f"{run_dir}` or pass --threshold"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(
            f"{mpath}: the '{args.threshold_from}' threshold is {threshold!r}, not a finite number; re-run "
            f"`piade evaluate {run_dir}` or pass --threshold"
        )
    return float(threshold), rule


def _map_targets(paths: list[Path], maps_dir: Path | None, *, force: bool) -> list[Path]:
    """The heat map file of each image (none without ``maps_dir``); refuses an existing one unless ``force``."""
    targets = [maps_dir / f"{i:05d}_{p.stem}.png" for i, p in enumerate(paths)] if maps_dir is not None else []
    if not force:
        clash = next((t for t in targets if t.exists()), None)
        if clash is not None:
            raise FileExistsError(f"{clash} exists; choose another --maps folder or pass --force")
    return targets


def _read_all_or_refuse(paths: list[Path], load: Callable[[Path], Any]) -> None:
    """Read every image of ``paths``; the first that cannot be read raises (--strict)."""
    for p in paths:
        try:
            load(p)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot read image {p} ({unreadable_reason(exc)}); --strict: nothing was scored "
                "or written (without --strict the other images are scored and this one is "
                "reported in the CSV's status column)"
            ) from exc


def _read_chunk(
    chunk: list[Path], start: int, load: Callable[[Path], Any]
) -> tuple[list[dict[str, Any]], list[Any], list[int]]:
    """One row per image of ``chunk`` with its status, the images read and their positions among all rows."""
    import math
    import sys

    import pandas as pd

    rows: list[dict[str, Any]] = []
    images: list[Any] = []
    good: list[int] = []  # positions in rows of the images read
    for i, p in enumerate(chunk):
        row: dict[str, Any] = {
            "path": str(p),
            **{k: math.nan for k in TERM_COLUMNS},
            "above_threshold": pd.NA,
            "status": "ok",
        }
        try:
            images.append(load(p))
            good.append(start + i)
        except (OSError, ValueError) as exc:
            row["status"] = f"unreadable: {unreadable_reason(exc)}"
            print(f"piade score: cannot read {p}: {unreadable_reason(exc)}", file=sys.stderr)
        rows.append(row)
    return rows, images, good


def _score_images(
    paths: list[Path],
    load: Callable[[Path], Any],
    model: Any,
    loss_fn: Any,
    device: Any,
    threshold: float,
    batch_size: int,
    targets: list[Path] | None,
) -> list[dict[str, Any]]:
    """Score ``paths`` in batches: one row per image; a heat map into ``targets`` too when given."""
    import torch

    from piade_lib.engine.scoring import anomaly_map

    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk_rows, images, good = _read_chunk(paths[start : start + batch_size], start, load)
        rows.extend(chunk_rows)
        if not images:
            continue
        x = torch.stack(images).to(device)
        with torch.no_grad():
            terms = loss_fn.per_image(model(x).reconstruction.float(), x)
        for j, r in enumerate(good):
            rows[r].update({k: float(terms[k][j]) for k in TERM_COLUMNS})
            rows[r]["above_threshold"] = bool(rows[r]["total"] > threshold)
        if targets is not None:
            maps = anomaly_map(model, x)
            for j, r in enumerate(good):
                save_map_png(x[j].cpu(), maps[j, 0], targets[r], f"{paths[r].name}: total {rows[r]['total']:.4f}")
    return rows


def _summarise(frame: Any, run_dir: Path, threshold: float, rule: str, out: Path, maps_dir: Path | None) -> int:
    """Print what was scored and where it was written; the exit code (1 when no image could be read)."""
    import sys

    n_bad = int((frame["status"] != "ok").sum())
    n_ok = len(frame) - n_bad
    n_above = int(frame["above_threshold"].eq(True).sum())  # NA for unreadable images
    print(
        f"scored {n_ok} of {len(frame)} image(s) with {run_dir}; threshold {threshold:.6g} ({rule}); "
        f"{n_above} above it" + (f"; {n_bad} could not be read (see the status column)" if n_bad else "")
    )
    print(f"scores: {out}" + (f"; maps: {maps_dir}" if maps_dir else ""))
    if n_ok == 0:
        print(
            f"piade score: error: none of the {len(frame)} image(s) could be read; the reasons are in {out}",
            file=sys.stderr,
        )
        return 1
    return 0
