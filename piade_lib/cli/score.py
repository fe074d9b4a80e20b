"""``piade score``: score new images with a trained run, optionally writing heat maps."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence


def add_parsers(sub: Any) -> None:
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


def cmd_score(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from piade_lib.data.transforms import load_image_for_scoring
    from piade_lib.engine import files, folders
    from piade_lib.engine.scoring import anomaly_map, load_trained, resolve_device

    run_dir = Path(args.run_dir)
    cfg = folders.load_config(run_dir)
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
        thresholds = files.read_json(mpath).get("thresholds") or {}
        threshold = thresholds.get(args.threshold_from)
        rule = f"95th percentile of the normal {args.threshold_from.replace('_', ' ')} scores"
        if threshold is None:
            raise ValueError(f"{mpath} records no '{args.threshold_from}' threshold; re-run `piade evaluate "
                             f"{run_dir}` or pass --threshold")
    device = resolve_device(args.device)
    model, loss_fn, cfg = load_trained(run_dir, device)
    from piade_lib.model.network import preset_from_dict

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
    files.write_csv(out, frame)
    n_above = int(frame["above_threshold"].sum())
    print(f"scored {len(frame)} image(s) with {run_dir}; threshold {threshold:.6g} ({rule}); "
          f"{n_above} above it")
    print(f"scores: {out}" + (f"; maps: {maps_dir}" if maps_dir else ""))
    return 0


