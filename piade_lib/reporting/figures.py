"""Figures from run folders: training histories, ROC curves, AUROC intervals, score histograms, term
AUROCs, and the paper's Figure 3 (reconstructions) and Figure 4 (one vs two instantiation vectors).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from piade_lib.engine import folders
from piade_lib.experiments.profiles import Profile, Section
from piade_lib.reporting.results import (
    ours_key,
    read_metrics,
    read_scores,
    runs_frame,
    section_plan,
)
from piade_lib.reporting.samples import _to_img


# ---------------------------------------------------------------------------------------------
# training and evaluation plots (notebooks 02, 03)
# ---------------------------------------------------------------------------------------------
def histories(section: Section, results_root: str | Path) -> pd.DataFrame:
    """history.csv of every PIADE run of a section, stacked, with class and variant columns."""
    frames = []
    for p in section_plan(section, results_root):
        path = p.run_dir / "history.csv"
        if p.kind == "piade" and path.is_file():
            h = pd.read_csv(path)
            h.insert(0, "variant", p.variant)
            h.insert(0, "class", p.normal_class)
            frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_histories(section: Section, results_root: str | Path):
    """Training loss terms per epoch (one line per class), one panel per term and variant."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    h = histories(section, results_root)
    terms = ["total", "mse", "perceptual", "ssim_loss"]
    long = h.melt(id_vars=["class", "variant", "epoch"], value_vars=terms, var_name="term", value_name="loss")
    variants = sorted(long["variant"].unique())
    with_legend = long["class"].nunique() <= 12
    fig, axes = plt.subplots(len(variants), len(terms), figsize=(3.2 * len(terms), 2.6 * len(variants)), squeeze=False)
    for r, v in enumerate(variants):
        for c, t in enumerate(terms):
            ax = axes[r, c]
            d = long[(long["variant"] == v) & (long["term"] == t)]
            sns.lineplot(
                data=d,
                x="epoch",
                y="loss",
                hue="class",
                marker="o",
                ax=ax,
                legend=with_legend and r == 0 and c == len(terms) - 1,
            )
            ax.set_title(f"{v}: {t}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    leg = axes[0, -1].get_legend()
    if leg is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title="class")
    fig.suptitle(
        f"{section.name} ({section.dataset}): training loss per epoch"
        + ("" if with_legend else " (one line per class)"),
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _panel_grid(n: int, max_cols: int, panel_size: tuple[float, float]):
    """A figure with ``n`` panels in rows of at most ``max_cols`` (unused cells hidden)."""
    import matplotlib.pyplot as plt

    ncol = max(1, min(max_cols, n))
    nrow = max(1, int(np.ceil(n / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(panel_size[0] * ncol, panel_size[1] * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes


def plot_roc_curves(section: Section, results_root: str | Path):
    """ROC curves (roc.csv) of every class: PIADE variants and baselines, one panel per model."""

    plan = section_plan(section, results_root)
    variants = list(dict.fromkeys(p.variant for p in plan))
    fig, axes = _panel_grid(len(variants), max_cols=4, panel_size=(3.4, 3.3))
    for ax, v in zip(axes.ravel(), variants):
        for p in (q for q in plan if q.variant == v):
            roc = pd.read_csv(p.run_dir / "roc.csv")
            auc = read_metrics(p.run_dir).get("auc")
            ax.plot(roc["fpr"], roc["tpr"], lw=1, label=f"{p.normal_class} ({auc:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.7, ls="--")
        ax.set(title=v, xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
        if len(section.class_names()) <= 12:
            ax.legend(fontsize=6, title="class (AUC)", title_fontsize=6, loc="lower right")
    fig.suptitle(f"{section.name} ({section.dataset}): ROC curves", fontsize=10)
    fig.tight_layout()
    return fig


def plot_auc_intervals(section: Section, results_root: str | Path):
    """Per-class AUC with 95% bootstrap intervals, every model of the section side by side. With
    several seeds, a model's marker is the mean over seeds and its bar spans the seeds' AUCs (the
    seed-to-seed spread); each seed is a small dot."""
    import matplotlib.pyplot as plt

    df = runs_frame(section, results_root)
    df["model"] = [p.variant.removesuffix(folders.seed_suffix(p.seed)) for p in section_plan(section, results_root)]
    classes = section.class_names()
    models = list(dict.fromkeys(df["model"]))
    multi = len(section.seed_list()) > 1
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.3 * len(classes) * len(models) + 2)), 3.6))
    for k, v in enumerate(models):
        x = np.arange(len(classes)) + (k - (len(models) - 1) / 2) * width
        d = df[df["model"] == v]
        if multi:
            g = d.groupby("class")["auc"].agg(["mean", "min", "max"]).reindex(classes).astype(float)
            err = np.vstack([g["mean"] - g["min"], g["max"] - g["mean"]])
            line = ax.errorbar(x, g["mean"], yerr=err, fmt="o", ms=4, capsize=2, label=v)
            xs = x[[classes.index(c) for c in d["class"]]]
            ax.scatter(xs, d["auc"].astype(float), s=5, color=line[0].get_color(), alpha=0.6, zorder=3)
            continue
        d = d.set_index("class").reindex(classes)
        err = None
        if d["auc_ci_low"].notna().all():
            err = np.vstack([d["auc"] - d["auc_ci_low"], d["auc_ci_high"] - d["auc"]]).astype(float)
        ax.errorbar(x, d["auc"].astype(float), yerr=err, fmt="o", ms=4, capsize=2, label=v)
    ax.axhline(0.5, color="grey", lw=0.7, ls="--")
    ax.set_xticks(
        np.arange(len(classes)),
        classes,
        rotation=90 if len(classes) > 15 else 0,
        fontsize=6 if len(classes) > 15 else 9,
    )
    what = f"mean over {len(section.seed_list())} seeds, bars: seed range" if multi else "95% CI"
    ax.set(
        ylabel=f"AUROC ({what})",
        xlabel="normal class",
        ylim=(min(0.0, ax.get_ylim()[0]), 1.02),
        title=f"{section.name} ({section.dataset}): per-class AUROC",
    )
    ax.legend(fontsize=7, ncol=min(4, len(models)))
    fig.tight_layout()
    return fig


def plot_score_histograms(section: Section, results_root: str | Path, max_classes: int = 10):
    """Anomaly-score histograms, normal vs anomalous test images, of the "ours" run per class."""
    import seaborn as sns

    preset, nv = ours_key(section)
    variant = folders.piade_variant(preset, nv, section.seed_list()[0])
    plan = [p for p in section_plan(section, results_root) if p.variant == variant]
    plan = plan[:max_classes]
    fig, axes = _panel_grid(len(plan), max_cols=5, panel_size=(3.0, 2.4))
    for ax, p in zip(axes.ravel(), plan):
        s = read_scores(p.run_dir).assign(kind=lambda f: f["label"].map({0: "normal", 1: "anomalous"}))
        sns.histplot(
            data=s,
            x="total",
            hue="kind",
            stat="density",
            common_norm=False,
            element="step",
            hue_order=["normal", "anomalous"],
            ax=ax,
            bins=20,
        )
        ax.set(title=f"{p.normal_class} (AUC {read_metrics(p.run_dir)['auc']:.2f})", xlabel="anomaly score")
        ax.title.set_fontsize(9)
    fig.suptitle(
        f"{section.name} ({section.dataset}), {preset}-v{nv}: score = mse + perceptual + (1 - SSIM)", fontsize=10
    )
    fig.tight_layout()
    return fig


def term_auc_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """AUROC of each loss term used alone as the score (metrics.json term_auc), PIADE runs."""
    rows = []
    for p in section_plan(section, results_root):
        if p.kind == "piade":
            m = read_metrics(p.run_dir)
            rows.append(
                {
                    "class": p.normal_class,
                    "variant": p.variant,
                    **(m.get("term_auc") or {}),
                    "pixel_auroc": m.get("pixel_auroc"),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figure 3 (reconstructions) and Figure 4 (plot)
# ---------------------------------------------------------------------------------------------
def reconstructions(run_dir: str | Path, n: int = 4, device: str = "cpu") -> dict[str, Any]:
    """``n`` normal and ``n`` anomalous test images of a PIADE run, their reconstructions, scores
    and (datasets with masks) pixel anomaly maps and masks, as CPU tensors."""
    import torch

    from piade_lib.engine.scoring import anomaly_map, load_trained
    from piade_lib.engine.splits import task_from_config

    model, loss_fn, cfg = load_trained(run_dir, device)
    task, _, test = task_from_config(cfg)
    scores = read_scores(run_dir).set_index("id")
    out: dict[str, Any] = {"config": cfg, "has_masks": bool(task.has_masks)}
    for label, name in ((0, "normal"), (1, "anomalous")):
        items = [test[i] for i in range(len(test)) if test[i]["label"] == label][:n]
        if not items:
            out[name] = None
            continue
        x = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            recon = model(x.to(device)).reconstruction.float().cpu()
        if cfg.get("preset_resolved", {}).get("output_activation") == "tanh":
            recon = (recon + 1) / 2  # for display only: the code preset reconstructs in [-1, 1]
        out[name] = {
            "images": x,
            "recon": recon.clamp(0, 1),
            "ids": [it["id"] for it in items],
            "scores": [
                float(scores.loc[it["id"], "total"]) if it["id"] in scores.index else float("nan") for it in items
            ],
            "masks": torch.stack([it["mask"] for it in items]),
            "maps": anomaly_map(model, x) if task.has_masks else None,
        }
    return out


def figure3_runs(profile: Profile, results_root: str | Path) -> list[tuple[str, Path]]:
    """(label, run folder) of the first class's "ours" run for every dataset of the table sections."""
    chosen, seen = [], set()
    for name in profile.table_sections():
        s = profile.sections[name]
        key = (s.dataset, s.protocol)
        if key in seen:
            continue
        seen.add(key)
        preset, nv = ours_key(s)
        cls = s.class_names()[0]
        variant = folders.piade_variant(preset, nv, s.seed_list()[0])
        p = next(q for q in section_plan(s, results_root) if q.normal_class == cls and q.variant == variant)
        chosen.append((f"{name}: {s.dataset} / {cls}", p.run_dir))
    return chosen


def plot_figure3(profile: Profile, results_root: str | Path, n: int = 4):
    """Figure 3: per dataset, normal and anomalous test images with their reconstructions (and the
    1 - SSIM anomaly maps and defect masks where the dataset has masks); None when the profile has
    no table section."""
    import matplotlib.pyplot as plt

    panels = []
    chosen = figure3_runs(profile, results_root)
    if not chosen:  # e.g. a readings-only profile: no table section, no Figure 3
        return None
    for label, run_dir in chosen:
        r = reconstructions(run_dir, n)
        rows = []
        for kind in ("normal", "anomalous"):
            d = r[kind]
            if d is None:
                continue
            rows.append((f"{kind}: input", list(d["images"]), [f"score {s:.3f}" for s in d["scores"]]))
            rows.append((f"{kind}: reconstruction", list(d["recon"]), None))
            if kind == "anomalous" and r["has_masks"]:
                rows.append(
                    ("anomalous: 1-SSIM map", [m.repeat(3, 1, 1) / max(float(m.max()), 1e-6) for m in d["maps"]], None)
                )
                rows.append(("anomalous: defect mask", [m.repeat(3, 1, 1) for m in d["masks"]], None))
        panels.append((label, rows))
    n_rows = max(len(rows) for _, rows in panels)
    fig = plt.figure(figsize=(len(panels) * (1.45 * n + 1.3), 1.55 * n_rows + 0.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(1, len(panels)))
    for sub, (label, rows) in zip(subfigs, panels):
        axes = sub.subplots(n_rows, n, squeeze=False)
        for r in range(n_rows):
            for c in range(n):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if r >= len(rows) or c >= len(rows[r][1]):
                    ax.axis("off")
                    continue
                title, imgs, captions = rows[r]
                ax.imshow(_to_img(imgs[c]), interpolation="nearest")
                if captions:
                    ax.set_xlabel(captions[c], fontsize=7, labelpad=1)
                if c == 0:
                    ax.set_ylabel(title.replace(": ", "\n"), fontsize=7)
        sub.suptitle(label, fontsize=9)
    fig.suptitle("Figure 3: reconstructions of normal and anomalous test images", fontsize=10)
    return fig


def plot_figure4(df: pd.DataFrame):
    """Figure 4: AUC with one and with two instantiation vectors per category (95% CIs)."""
    import matplotlib.pyplot as plt

    body = df.iloc[:-1]
    x = np.arange(len(body))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(body) + 2), 3.8))
    for k, (col, label) in enumerate((("auc_1vec", "one vector"), ("auc_2vec", "two vectors"))):
        lo, hi = body[f"{col}_ci_low"].astype(float), body[f"{col}_ci_high"].astype(float)
        err = np.vstack([body[col] - lo, hi - body[col]]) if lo.notna().all() else None
        ax.bar(x + (k - 0.5) * 0.38, body[col].astype(float), 0.38, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, body["category"])
    ax.set(
        ylabel="AUROC (95% CI)",
        ylim=(0, 1.05),
        title=f"Figure 4: one vs two instantiation vectors ({df['dataset'].iloc[0]})",
    )
    mean = df.iloc[-1]
    note = f"Mean difference (two - one) {mean['diff']:+.3f}"
    if pd.notna(mean["diff_ci_low"]):
        note += f", 95% CI [{mean['diff_ci_low']:+.3f}, {mean['diff_ci_high']:+.3f}]"
    note += ". Paper: two vectors better in all six categories, +9% on average (its bar values are not published)."
    fig.text(0.01, 0.01, textwrap.fill(note, 95), fontsize=7, va="bottom")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def save_figure(fig, path: str | Path, dpi: int = 130) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
