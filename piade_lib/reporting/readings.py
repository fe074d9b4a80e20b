"""What each reading choice costs: one preset field flipped at a time, measured.

A readings section (profile key ``flips``) trains, for every class and seed, the preset as it is and
one run per reading of :data:`piade_lib.presets.READINGS` flipped to the other preset's value, all
else equal (data, seed, step budget). :func:`readings_table` sets each flip beside the unflipped
runs:

* ``diff``: mean over classes and seeds of ``AUC(flipped) - AUC(as is)``;
* ``diff_ci_low/high``: a paired percentile bootstrap of that mean: in every replicate each run
  pair's test images are resampled (normal and anomalous separately) and both models score the same
  resample, so image-level noise is shared, not doubled;
* ``seed_ci_low/high``: a Student-t interval over seeds of the per-seed mean difference: the
  training-noise view (wide with three seeds, which is the honest answer);
* ``recon_ratio_*``: the normal test images' reconstruction error relative to the train-mean image,
  as is and flipped (below 1: more than the mean image learned);
* ``early_step``, ``diff_early``: when the runs were also scored at earlier optimiser steps (profile
  key ``eval_steps``, their ``convergence.csv``), the same mean difference at the earliest of them, so
  an effect of early training can be told from one that outlasts it (None without such a step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from piade_lib.experiments.profiles import Section
from piade_lib.metrics import bootstrap_aucs, percentile_interval
from piade_lib.presets import PRESETS, READINGS, RUN_LEVEL_FIELDS, other_preset
from piade_lib.reporting.results import CI_LEVEL, read_metrics, section_plan
from piade_lib.reporting.stats import paired_scores
from piade_lib.reporting.tables import _n_bootstrap

READINGS_COLUMNS = (
    "reading",
    "fields",
    "value_as_is",
    "value_flipped",
    "auc_as_is",
    "auc_flipped",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "seed_ci_low",
    "seed_ci_high",
    "n_seeds",
    "n_classes",
    "recon_ratio_as_is",
    "recon_ratio_flipped",
    "early_step",
    "diff_early",
)


def _early_auc(run_dir: Path) -> tuple[int, float] | None:
    """(step, AUROC) of a run's earliest milestone before its final model (``convergence.csv``), or None."""
    path = Path(run_dir) / "convergence.csv"
    if not path.is_file():
        return None
    conv = pd.read_csv(path)
    if len(conv) < 2:  # the final model's row only
        return None
    first = conv.iloc[:-1].sort_values("step").iloc[0]
    return int(first["step"]), float(first["auc"])


def _values(section: Section, preset: str, reading: str) -> tuple[str, str]:
    """The reading's values as the section's runs use them, unflipped and flipped: a run-level field
    the profile sets (e.g. ``batch_size``) replaces the preset's value on the unflipped side."""
    mine, other = PRESETS[preset], PRESETS[other_preset(preset)]
    fields = READINGS[reading]

    def as_is(f: str) -> object:
        if f in RUN_LEVEL_FIELDS and section.run.get(f) is not None:
            return section.run[f]
        return getattr(mine, f)

    return ", ".join(str(as_is(f)) for f in fields), ", ".join(str(getattr(other, f)) for f in fields)


def _t_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    if values.size < 2:
        return None, None
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def readings_table(section: Section, results_root: str | Path) -> pd.DataFrame:
    """One row per flipped reading of a readings section (columns :data:`READINGS_COLUMNS`), for the
    section's first preset and most vectors."""
    if not section.flips:
        raise ValueError(f"section {section.name!r} flips no reading (profile key 'flips')")
    plan = section_plan(section, results_root)
    preset, nv = section.presets[0], max(section.n_vectors)
    by = {
        (p.normal_class, p.seed, p.flip): p.run_dir
        for p in plan
        if p.kind == "piade" and p.preset == preset and p.n_vectors == nv
    }
    classes, seeds = section.class_names(), section.seed_list()
    nb, boot_seed = _n_bootstrap(section), int(section.run.get("seed", 0))
    rows: list[dict[str, Any]] = []
    for flip in section.flips:
        diffs = np.empty((len(seeds), len(classes)))
        boots, a0, a1, r0, r1, early = [], [], [], [], [], []
        for i, s in enumerate(seeds):
            for j, c in enumerate(classes):
                base, flipped = by[(c, s, None)], by[(c, s, flip)]
                mb, mf = read_metrics(base), read_metrics(flipped)
                diffs[i, j] = mf["auc"] - mb["auc"]
                a0.append(mb["auc"])
                a1.append(mf["auc"])
                r0.append(mb.get("recon_to_mean_image"))
                r1.append(mf.get("recon_to_mean_image"))
                eb, ef = _early_auc(base), _early_auc(flipped)
                early.append((eb[0], ef[1] - eb[1]) if eb and ef and eb[0] == ef[0] else None)
                if nb > 0:
                    pair = paired_scores(base, flipped)
                    b = bootstrap_aucs(
                        pair["label"].to_numpy(), pair[["a", "b"]].to_numpy(), nb, boot_seed + 1000 * i + j
                    )
                    boots.append(b[:, 1] - b[:, 0])
        lo, hi = percentile_interval(np.mean(boots, axis=0)) if boots else (None, None)
        slo, shi = _t_interval(diffs.mean(axis=1))
        as_is, flipped_v = _values(section, preset, flip)
        rows.append(
            {
                "reading": flip,
                "fields": ", ".join(READINGS[flip]),
                "value_as_is": as_is,
                "value_flipped": flipped_v,
                "auc_as_is": float(np.mean(a0)),
                "auc_flipped": float(np.mean(a1)),
                "diff": float(diffs.mean()),
                "diff_ci_low": lo,
                "diff_ci_high": hi,
                "seed_ci_low": slo,
                "seed_ci_high": shi,
                "n_seeds": len(seeds),
                "n_classes": len(classes),
                "recon_ratio_as_is": _mean_or_none(r0),
                "recon_ratio_flipped": _mean_or_none(r1),
                "early_step": early[0][0] if early and all(early) else None,
                "diff_early": float(np.mean([e[1] for e in early])) if early and all(early) else None,
            }
        )
    return pd.DataFrame(rows, columns=list(READINGS_COLUMNS))


def _mean_or_none(values: list[Any]) -> float | None:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else None


def readings_statement(df: pd.DataFrame, section: Section) -> str:
    """Which flips change the AUROC beyond both intervals, in one paragraph."""
    sure = df[(df["diff_ci_low"] > 0) & (df["seed_ci_low"] > 0)]
    worse = df[(df["diff_ci_high"] < 0) & (df["seed_ci_high"] < 0)]
    preset = section.presets[0]
    parts = [
        f"{len(df)} readings of the `{preset}` preset flipped one at a time to `{other_preset(preset)}`'s "
        f"value, {int(df['n_classes'].iloc[0])} class(es) x {int(df['n_seeds'].iloc[0])} seed(s) each."
    ]
    for label, rows in (("raise", sure), ("lower", worse)):
        if len(rows):
            parts.append(
                f"Flips that {label} the AUROC with both intervals excluding zero: "
                + ", ".join(f"{r.reading} ({r.diff:+.3f})" for r in rows.itertuples())
                + "."
            )
    if not len(sure) and not len(worse):
        parts.append("No flip moves the AUROC with both the image-bootstrap and the seed interval excluding zero.")
    return " ".join(parts)


def plot_readings(df: pd.DataFrame, title: str = ""):
    """Forest plot: the AUROC change of each flip with its paired-bootstrap interval (thick) and its
    interval over seeds (thin); the change at the earliest eval step as an open circle, when scored."""
    import matplotlib.pyplot as plt

    d = df.sort_values("diff").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(d) + 1.2))
    y = np.arange(len(d))
    for k, r in d.iterrows():
        if pd.notna(r["seed_ci_low"]):
            ax.plot([r["seed_ci_low"], r["seed_ci_high"]], [k, k], color="grey", lw=1)
        if pd.notna(r["diff_ci_low"]):
            ax.plot([r["diff_ci_low"], r["diff_ci_high"]], [k, k], color="tab:blue", lw=4, alpha=0.6)
    ax.scatter(d["diff"], y, color="black", zorder=3, s=14, label="change (final model)")
    if "diff_early" in d and d["diff_early"].notna().any():
        step = int(d["early_step"].dropna().iloc[0])
        ax.scatter(
            d["diff_early"], y, facecolors="none", edgecolors="tab:red", zorder=3, s=22, label=f"change at step {step}"
        )
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(0, color="black", lw=0.8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(6))
    ax.set_yticks(y, [f"{r.reading}: {r.value_as_is} -> {r.value_flipped}"[:70] for r in d.itertuples()], fontsize=7)
    ax.set_xlabel("AUROC(flipped) - AUROC(as is); thick: paired image bootstrap, thin: t over seeds")
    ax.set_title(title or "what each reading costs", fontsize=9)
    fig.tight_layout()
    return fig


def readings_markdown(df: pd.DataFrame) -> str:
    """The measured-effect table as markdown (for docs/reproduction-notes.md and the results README)."""

    def ci(lo: Any, hi: Any) -> str:
        return "" if lo is None or pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"

    steps = df["early_step"].dropna().unique() if "early_step" in df else []
    early = f" change at step {int(steps[0])} |" if len(steps) == 1 else ""
    lines = [
        "| reading | value as is -> flipped | AUROC as is | flipped | change | 95% CI (images) | 95% CI (seeds) | "
        f"recon/mean-image as is -> flipped |{early}",
        "|---|---|---|---|---|---|---|---|" + ("---|" if early else ""),
    ]
    for r in df.sort_values("diff").itertuples():
        ratio = (
            ""
            if r.recon_ratio_as_is is None or pd.isna(r.recon_ratio_as_is)
            else f"{r.recon_ratio_as_is:.2f} -> {r.recon_ratio_flipped:.2f}"
        )
        lines.append(
            f"| {r.reading} | {r.value_as_is} -> {r.value_flipped} | {r.auc_as_is:.3f} | {r.auc_flipped:.3f} | "
            f"{r.diff:+.3f} | {ci(r.diff_ci_low, r.diff_ci_high)} | {ci(r.seed_ci_low, r.seed_ci_high)} | "
            f"{ratio} |" + (f" {r.diff_early:+.3f} |" if early and pd.notna(r.diff_early) else " |" if early else "")
        )
    return "\n".join(lines)
