"""Has PIADE learned anything? Convergence against optimiser steps, and reconstructions against the
train-mean image.

Two questions a number from a barely trained model cannot answer, read from the run folders:

* ``convergence.csv`` (runs with ``eval_steps``): the test AUROC, the AUROC of the MSE term alone and
  the normal test images' reconstruction error at each optimiser-step milestone, the last row
  being the final model (the numbers of ``metrics.json``). :func:`plot_convergence` draws them
  against steps, mean over classes with the seed-to-seed spread, the section's re-run baselines as
  horizontal lines.
* ``metrics.json``'s ``normal_recon_mse`` and ``normal_mean_image_mse`` (every PIADE run): the
  reconstruction error of the normal test images beside the error of the train-mean image used as
  the "reconstruction". A model whose ratio ``recon_to_mean_image`` is not below 1 has not learned
  more than the mean image, and its AUROC measures image statistics, not PIADE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from piade_lib.experiments.profiles import Section
from piade_lib.reporting.results import read_metrics, section_plan


def reconstruction_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """One row per PIADE run of a section: class, variant, seed, steps, auc, normal_recon_mse,
    normal_mean_image_mse, recon_to_mean_image and ``beats_mean_image`` (ratio < 1)."""
    rows = []
    for p in section_plan(section, results_root):
        if p.kind != "piade":
            continue
        m = read_metrics(p.run_dir)
        ratio = m.get("recon_to_mean_image")
        rows.append(
            {
                "section": section.name,
                "class": p.normal_class,
                "variant": p.variant,
                "preset": p.preset,
                "seed": p.seed,
                "auc": m.get("auc"),
                "normal_recon_mse": m.get("normal_recon_mse"),
                "normal_mean_image_mse": m.get("normal_mean_image_mse"),
                "recon_to_mean_image": ratio,
                "beats_mean_image": None if ratio is None else bool(ratio < 1.0),
            }
        )
    return pd.DataFrame(rows)


def summarize_reconstruction_checks(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per section and preset: runs, how many beat the mean image, median and worst ratio."""
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty:
        return df
    g = df.groupby(["section", "preset"], sort=False)
    return pd.DataFrame(
        {
            "runs": g.size(),
            "beat_mean_image": g["beats_mean_image"].sum().astype(int),
            "median_ratio": g["recon_to_mean_image"].median(),
            "worst_ratio": g["recon_to_mean_image"].max(),
            "mean_auc": g["auc"].mean(),
        }
    ).reset_index()


def convergence_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """``convergence.csv`` of every PIADE run of a section, stacked with class, preset, seed columns
    (empty when the section has no ``eval_steps``)."""
    frames = []
    for p in section_plan(section, results_root):
        path = p.run_dir / "convergence.csv"
        if p.kind == "piade" and p.flip is None and path.is_file():
            c = pd.read_csv(path)
            c.insert(0, "seed", p.seed)
            c.insert(0, "preset", p.preset)
            c.insert(0, "variant", p.variant)
            c.insert(0, "class", p.normal_class)
            frames.append(c)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def baseline_levels(section: Section, results_root: str | Path) -> dict[str, float]:
    """Mean AUROC over classes and seeds of each re-run baseline of the section."""
    out: dict[str, list[float]] = {}
    for p in section_plan(section, results_root):
        if p.kind == "baseline":
            out.setdefault(str(p.baseline), []).append(float(read_metrics(p.run_dir)["auc"]))
    return {k: float(np.mean(v)) for k, v in out.items()}


def overtake_steps(conv: pd.DataFrame, levels: dict[str, float]) -> pd.DataFrame:
    """Per preset and baseline: the first milestone at which PIADE's mean AUROC (over classes and
    seeds) reaches the baseline's, or NaN when it never does within the budget."""
    rows = []
    if conv.empty:
        return pd.DataFrame(columns=["preset", "baseline", "baseline_auc", "piade_final_auc", "overtakes_at_step"])
    curve = conv.groupby(["preset", "step"])["auc"].mean().reset_index()
    for preset, c in curve.groupby("preset", sort=False):
        c = c.sort_values("step")
        for name, level in levels.items():
            above = c[c["auc"] >= level]
            rows.append(
                {
                    "preset": preset,
                    "baseline": name,
                    "baseline_auc": level,
                    "piade_final_auc": float(c["auc"].iloc[-1]),
                    "overtakes_at_step": float(above["step"].iloc[0]) if len(above) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def plot_convergence(section: Section, results_root: str | Path):
    """AUROC and reconstruction error (relative to the mean image) against optimiser steps: mean over
    classes per seed, then mean and spread (sd) over seeds, one line per preset; the baselines' mean
    AUROC as horizontal lines; ratio 1 = no better than the train-mean image."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    conv = convergence_frame(section, results_root)
    if conv.empty:
        raise ValueError(f"section {section.name!r} has no convergence.csv: give it eval_steps in the profile")
    per_seed = conv.groupby(["preset", "seed", "step"], as_index=False)[["auc", "recon_to_mean_image"]].mean()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.lineplot(data=per_seed, x="step", y="auc", hue="preset", marker="o", errorbar="sd", ax=axes[0])
    for (name, level), color in zip(baseline_levels(section, results_root).items(), sns.color_palette("Greys_r", 6)):
        axes[0].axhline(level, ls="--", lw=1, color=color, label=f"{name} ({level:.3f})")
    axes[0].set(title="test AUROC (mean over classes; band: sd over seeds)", xlabel="optimiser steps", ylabel="AUROC")
    axes[0].legend(fontsize=7, loc="lower right")
    sns.lineplot(
        data=per_seed,
        x="step",
        y="recon_to_mean_image",
        hue="preset",
        marker="o",
        errorbar="sd",
        ax=axes[1],
        legend=False,
    )
    axes[1].axhline(1.0, color="black", lw=1, ls=":")
    axes[1].text(axes[1].get_xlim()[0], 1.0, " train-mean image", va="bottom", fontsize=8)
    axes[1].set(
        title="normal test reconstruction MSE / mean-image MSE",
        xlabel="optimiser steps",
        ylabel="ratio (< 1: learned more than the mean)",
        yscale="log",
    )
    n_cls, n_seeds = conv["class"].nunique(), conv["seed"].nunique()
    fig.suptitle(
        f"{section.name} ({section.dataset}): convergence over {n_cls} class(es), {n_seeds} seed(s)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_reconstruction_check(frame: pd.DataFrame):
    """Per run: reconstruction MSE against the mean image's MSE (normal test images), one point per
    run, coloured by preset; points below the diagonal learned more than the mean image."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    sns.scatterplot(
        data=frame, x="normal_mean_image_mse", y="normal_recon_mse", hue="preset", style="section", ax=ax, s=28
    )
    lim = [0, float(np.nanmax(frame[["normal_mean_image_mse", "normal_recon_mse"]].to_numpy())) * 1.05]
    ax.plot(lim, lim, color="black", lw=0.8, ls=":")
    ax.set(
        xlim=lim,
        ylim=lim,
        xlabel="train-mean image MSE",
        ylabel="reconstruction MSE",
        title="normal test images: below the diagonal = better than the mean image",
    )
    ax.title.set_fontsize(9)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.tight_layout()
    return fig
