"""Score a profile's finished PIADE runs as trained and with BatchNorm statistics re-estimated on the train split.

Usage (from the repository root, after ``./run_all.sh PROFILE``)::

    PIADE_DATA=../shared/data .venv/bin/python scripts/bn_recalibration.py mnist

Same weights, two sets of BatchNorm running statistics (see piade_lib/engine/recalibration.py): if a
run that scored badly recovers when its statistics are re-estimated, what failed is the statistics its
BatchNorm momentum left, not what it learned. Writes ``<results root>/diagnostics/bn_recalibration.csv``
(one row per run), ``bn_recalibration.png`` (AUROC and reconstruction-to-mean-image ratio, as trained
against recalibrated) and ``bn_recalibration.json`` (the summary per preset, which it also prints, with
the command, the commit, the lock and the package versions). Reads run folders only; nothing in them
is changed.

``--only PART`` (encoder, pyramid, upsampling or decoder) re-estimates that part's BatchNorm layers
alone (the others keep their trained statistics) and writes ``bn_recalibration_<PART>.*`` instead,
beside the all-layer files; ``--preset NAME`` keeps that preset's runs (``..._<NAME>.*``). The runs of
a readings section are summarised per reading flipped. ``--per-layer`` also writes ``<stem>_layers.csv``
and ``.png``: per run and BatchNorm layer, how far the trained running statistics were from the
re-estimated ones, beside the size of the layer's feature map and the values per channel that one
training batch gave its statistics.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from piade_lib.cli import args as A
from piade_lib.engine import files, provenance
from piade_lib.engine.recalibration import NETWORK_PARTS, recalibration_summary
from piade_lib.engine.scoring import resolve_device
from piade_lib.experiments.plan import profile_runs
from piade_lib.experiments.profiles import ProfileError, load_profile
from piade_lib.reporting.figures import save_figure


def by_group(frame: pd.DataFrame) -> Iterator[tuple[dict[str, str], str, pd.DataFrame]]:
    """The runs grouped as the summary and the plots tell them apart: by preset, and by the reading
    flipped where a readings section flips any (``flip``: its name, empty for the runs as they are).
    Yields each group's key values, its legend label and its rows."""
    has_flips = "flip" in frame and frame["flip"].fillna("").ne("").any()
    keys = ["preset", "flip"] if has_flips else ["preset"]
    for values, g in frame.fillna({"flip": ""}).groupby(keys, sort=False):
        named = dict(zip(keys, values))
        label = " ".join(f"+{v}" if k == "flip" else str(v) for k, v in named.items() if v != "")
        yield named, label, g


COLLAPSE_RATIO = 1.5  # a run "collapsed": its normal test images reconstructed 1.5x worse than by the mean image


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per preset (and reading flipped, if any): runs, mean and lowest AUROC, how many beat the mean image,
    how many collapsed (reconstruction ratio above ``COLLAPSE_RATIO``) and the largest ratio, both ways."""
    rows = []
    for named, _, g in by_group(frame):
        row = {**named, "runs": len(g)}
        for how in ("as_trained", "recalibrated"):
            ratio = g[f"recon_to_mean_image_{how}"]
            row[f"mean_auc_{how}"] = g[f"auc_{how}"].mean()
            row[f"min_auc_{how}"] = g[f"auc_{how}"].min()
            row[f"beat_mean_image_{how}"] = int((ratio < 1).sum())
            row[f"collapsed_{how}"] = int((ratio > COLLAPSE_RATIO).sum())
            row[f"largest_ratio_{how}"] = ratio.max()
        rows.append(row)
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path, which: str = "BatchNorm") -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, key, title in (
        (axes[0], "auc", "AUROC"),
        (axes[1], "recon_to_mean_image", "recon. MSE / mean-image MSE (normal test images)"),
    ):
        for _, label, g in by_group(frame):
            ax.scatter(g[f"{key}_as_trained"], g[f"{key}_recalibrated"], label=label, alpha=0.8)
        lo = min(frame[f"{key}_as_trained"].min(), frame[f"{key}_recalibrated"].min())
        hi = max(frame[f"{key}_as_trained"].max(), frame[f"{key}_recalibrated"].max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="as trained", ylabel=f"{which} statistics re-estimated on the train split", title=title)
        ax.legend(fontsize=7)
    fig.suptitle(f"Same weights, two sets of {which} statistics (one point per run)")
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_layers(layers: pd.DataFrame, path: Path) -> None:
    """Per BatchNorm layer (in network order): how far each run's trained variances were from the
    re-estimated ones (one line per run; runs that reconstruct worse than the mean image drawn solid),
    and the values per channel that one training batch gave each layer."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(2, 1))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    legend: list[Line2D] = []
    for k, (_, label, g) in enumerate(by_group(layers)):
        colour = colours[k % len(colours)]
        for _, run in g.groupby(["class", "seed"], sort=False):
            bad = bool(run["recon_to_mean_image_as_trained"].iloc[0] >= 1)
            top.plot(
                run["index"],
                run["log_var_ratio"],
                color=colour,
                lw=1.4 if bad else 0.7,
                ls="-" if bad else ":",
                alpha=0.9,
            )
        legend.append(Line2D([], [], color=colour, lw=1.4, label=label))
        first = g.drop_duplicates("index").sort_values("index")
        bottom.step(first["index"], first["values_per_channel"], where="mid", color=colour, label=label)
    top.set(ylabel="mean |ln(var as trained / re-estimated)|", yscale="log")
    top.set_title(
        "BatchNorm statistics as trained vs re-estimated on the train split (solid: worse than the mean image)",
        fontsize=9,
    )
    top.legend(handles=legend, fontsize=7)  # groups by colour; the line style marks the runs
    bottom.set(xlabel="BatchNorm layer (network order)", ylabel="values per channel\nper training batch", yscale="log")
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", help="a profile name or YAML file whose runs have finished")
    ap.add_argument("--results-root", default=None, help="results folder (default: the profile's)")
    ap.add_argument("--device", type=A.device, default="cpu", help="cpu (default), cuda, cuda:N, auto")
    ap.add_argument(
        "--batch-size", type=A.TRAIN_BATCH, default=64, help="batch size of the re-estimation, >= 2 (default 64)"
    )
    ap.add_argument(
        "--only",
        choices=list(NETWORK_PARTS),
        default=None,
        help="re-estimate the BatchNorm layers of this part of the network alone (default: every BatchNorm layer)",
    )
    ap.add_argument("--preset", default=None, help="only the runs of this preset (default: every PIADE run)")
    ap.add_argument(
        "--per-layer",
        action="store_true",
        help="also write <stem>_layers.csv/.png: per run and BatchNorm layer, how far the trained statistics were "
        "from the re-estimated ones, beside the values per channel each layer's batch statistics had in training",
    )
    args = ap.parse_args(argv)
    try:
        prof = load_profile(args.profile)
    except ProfileError as exc:
        print(f"bn_recalibration: error: {exc}", file=sys.stderr)
        return 2
    root = Path(args.results_root or prof.results_root)
    plan = profile_runs(prof, root, lambda p: p.kind == "piade")  # a run two sections share is scored once
    if args.preset is not None:
        presets = sorted({p.preset for p in plan})
        plan = [p for p in plan if p.preset == args.preset]
        if not plan:
            print(
                f"bn_recalibration: error: profile {prof.name} has no {args.preset!r} runs; its presets: {presets}",
                file=sys.stderr,
            )
            return 2
    missing = [p.run_dir for p in plan if not (p.run_dir / "metrics.json").is_file()]
    if not plan:
        print(f"bn_recalibration: error: profile {prof.name} plans no PIADE runs", file=sys.stderr)
        return 2
    if missing:
        print(
            f"bn_recalibration: error: {len(missing)} of the {len(plan)} PIADE runs of profile {prof.name} have not "
            f"finished (first: {missing[0]}); run ./run_all.sh {prof.name} first",
            file=sys.stderr,
        )
        return 2
    t0, code = time.time(), provenance.code_provenance()  # the code as the measurement starts
    rows = []
    for p in tqdm(plan, desc="recalibrating", unit="run"):
        try:
            rows.append(
                {
                    "section": p.section,
                    "flip": p.flip or "",
                    **recalibration_summary(
                        p.run_dir,
                        device=args.device,
                        batch_size=args.batch_size,
                        only=args.only,
                        per_layer=args.per_layer,
                    ),
                }
            )
        except Exception as exc:  # noqa: BLE001 -- one line naming the run (missing data, a damaged checkpoint, ...)
            print(f"bn_recalibration: error: {p.run_dir}: {exc}; nothing was written", file=sys.stderr)
            return 1
    run_keys = (
        "section",
        "flip",
        "class",
        "preset",
        "seed",
        "variant",
        "auc_as_trained",
        "recon_to_mean_image_as_trained",
    )
    layers = [{k: r[k] for k in run_keys} | layer for r in rows for layer in r.pop("layers", None) or []]
    frame = pd.DataFrame(rows)
    out = root / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    stem = "bn_recalibration" + (f"_{args.only}" if args.only else "") + (f"_{args.preset}" if args.preset else "")
    files.write_csv(out / f"{stem}.csv", frame)
    if args.per_layer:
        per_layer = pd.DataFrame(layers)
        files.write_csv(out / f"{stem}_layers.csv", per_layer)
        plot_layers(per_layer, out / f"{stem}_layers.png")
    plot(frame, out / f"{stem}.png", f"{args.only} BatchNorm" if args.only else "BatchNorm")
    summary = summarise(frame)
    drift = float((frame["auc_as_trained"] - frame["metrics_auc"]).abs().max())
    record = {
        "what": "PIADE runs scored as trained and with BatchNorm statistics re-estimated on the train split",
        "layers_reestimated": f"the {args.only}'s BatchNorm layers" if args.only else "every BatchNorm layer",
        "profile": prof.name,
        "command": ["scripts/bn_recalibration.py", *provenance.portable(argv if argv is not None else sys.argv[1:])],
        "args": provenance.recorded_args(args),
        "seconds": round(time.time() - t0, 1),
        "device_name": provenance.device_name(resolve_device(args.device)),
        **code,
        "max_abs_auc_as_trained_minus_metrics": drift,
        "summary": summary.to_dict(orient="records"),
    }
    files.write_json(out / f"{stem}.json", record)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(summary.to_string(index=False))
    print(f"largest |AUROC as trained - metrics.json's|: {drift:.2e}")
    print(f"wrote {stem}.csv, .png and .json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
