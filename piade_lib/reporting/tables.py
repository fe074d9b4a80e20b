"""The paper's tables from run folders, beside the paper's numbers.

Everything here is computed from what the engine wrote into the run folders
(``metrics.json``, ``scores.csv``, ``roc.csv``, ``history.csv``, ``config.json``,
``provenance.json``); the paper's numbers come only from :mod:`piade_lib.paper_results`.

Table CSVs (``tables/table2.csv`` ...): one row per normal class and a final ``mean`` row;
columns :data:`TABLE_COLUMNS` first, then per extra preset ``<preset>_auc`` (+ CI), per re-run
baseline ``<name>_auc`` and, where the section runs on the paper's dataset, the paper's baseline
columns ``paper_<name>_auc``. ``paper_auc`` is empty when the section runs on another dataset
than the paper's (the offline stand-ins). The mean row's interval is a percentile bootstrap of
the mean AUC: each bootstrap replicate resamples every class's test set (normal and anomalous
images separately, as for the per-class intervals) and averages the per-class AUCs.

Figure 4 CSV (``tables/figure4.csv``): one row per category and a final ``mean`` row; columns
:data:`FIGURE4_COLUMNS`. ``diff = auc_2vec - auc_1vec`` with a paired bootstrap interval (the same
resampled test images score both models). The paper's values are not available (see
``paper_results.FIGURE4_SOURCE``), so ``paper_auc_1vec`` / ``paper_auc_2vec`` are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from piade_lib import paper_results
from piade_lib.engine import files, folders
from piade_lib.experiments.plan import PlannedRun
from piade_lib.experiments.profiles import Section
from piade_lib.metrics import bootstrap_aucs, percentile_interval
from piade_lib.reporting.results import (
    MEAN,
    TABLE_COLUMNS,
    ours_key,
    read_metrics,
    section_plan,
)
from piade_lib.reporting.stats import mean_auc_ci, paired_scores

FIGURE4_COLUMNS = (
    "dataset",
    "category",
    "auc_1vec",
    "auc_1vec_ci_low",
    "auc_1vec_ci_high",
    "auc_2vec",
    "auc_2vec_ci_low",
    "auc_2vec_ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "paper_auc_1vec",
    "paper_auc_2vec",
)


class TableSchemaError(ValueError):
    """A table does not follow the documented CSV schema."""


# ---------------------------------------------------------------------------------------------
# tables 2, 3, 4 (and extra sections)
# ---------------------------------------------------------------------------------------------
def _n_bootstrap(section: Section) -> int:
    return int(section.run.get("n_bootstrap", 1000))


def _seed_runs(by: dict[tuple[str, str], PlannedRun], cls: str, variant_of, seeds: Sequence[int]) -> list[Path]:
    return [by[(cls, variant_of(s))].run_dir for s in seeds]


def _seed_sd(values: Sequence[float]) -> float | None:
    """Seed-to-seed standard deviation (ddof 1); None with a single seed."""
    v = [float(x) for x in values if x is not None]
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def _over_seeds(dirs: Sequence[Path], nb: int, seed: int) -> dict[str, Any]:
    """AUC over the seeds of one class: the mean, a bootstrap interval of that mean (each seed's test
    images resampled; a single seed keeps its own metrics.json interval) and the seed-to-seed sd."""
    ms = [read_metrics(d) for d in dirs]
    aucs = [m.get("auc") for m in ms]
    if len(dirs) == 1:
        lo, hi = ms[0].get("auc_ci_low"), ms[0].get("auc_ci_high")
    else:
        _, lo, hi = mean_auc_ci(dirs, n_bootstrap=nb, seed=seed)
    return {"auc": float(np.mean(aucs)), "low": lo, "high": hi, "sd": _seed_sd(aucs), "first": ms[0]}


@dataclass
class _TableRuns:
    """The runs of a section table, looked up by (class, preset or baseline, seed)."""

    section: Section
    by: dict[tuple[str, str], PlannedRun]
    n_vectors: int

    @property
    def seeds(self) -> list[int]:
        return self.section.seed_list()

    def piade(self, cls: str, preset: str) -> list[Path]:
        return _seed_runs(self.by, cls, lambda s: folders.piade_variant(preset, self.n_vectors, s), self.seeds)

    def baseline(self, cls: str, name: str) -> list[Path]:
        return _seed_runs(self.by, cls, lambda s: folders.baseline_variant(name, s), self.seeds)


def _class_row(
    runs: _TableRuns, cls: str, presets: list[str], paper_table: str | None, nb: int, boot_seed: int
) -> dict[str, Any]:
    """One class's row: our AUC per preset (mean over seeds, interval, seed sd), the baselines, the paper."""
    section, multi = runs.section, len(runs.seeds) > 1
    row: dict[str, Any] = {"dataset": section.dataset, "class": cls}
    first: dict[str, Any] = {}
    for i, pr in enumerate(presets):
        prefix = "ours" if i == 0 else pr
        m = _over_seeds(runs.piade(cls, pr), nb, boot_seed)
        row.update({f"{prefix}_auc": m["auc"], f"{prefix}_ci_low": m["low"], f"{prefix}_ci_high": m["high"]})
        if i == 0:
            row["paper_auc"] = paper_results.paper_ours_auc(paper_table, cls) if paper_table else None
            first = m["first"]
        if multi:
            row[f"{prefix}_seed_sd"] = m["sd"]
    for bl in section.baselines:
        row[f"{bl}_auc"] = float(np.mean([read_metrics(d).get("auc") for d in runs.baseline(cls, bl)]))
    row["n_normal"], row["n_anomalous"] = first.get("n_normal"), first.get("n_anomalous")
    if first.get("pixel_auroc") is not None:
        row["ours_pixel_auroc"] = first.get("pixel_auroc")
    return row


def _mean_row(
    df: pd.DataFrame, runs: _TableRuns, presets: list[str], paper_table: str | None, nb: int, boot_seed: int
) -> dict[str, Any]:
    """The mean row: plain means (sums of image counts), bootstrap intervals of the mean for the PIADE
    columns, and with several seeds the spread over seeds of the mean over classes."""
    classes = runs.section.class_names()
    mean: dict[str, Any] = {"dataset": runs.section.dataset, "class": MEAN}
    for col in df.columns:
        if col not in ("dataset", "class") and pd.api.types.is_numeric_dtype(df[col]) and df[col].notna().any():
            mean[col] = float(df[col].mean()) if col not in ("n_normal", "n_anomalous") else int(df[col].sum())
    for i, pr in enumerate(presets):
        prefix = "ours" if i == 0 else pr
        dirs = [d for c in classes for d in runs.piade(c, pr)]
        _, mean[f"{prefix}_ci_low"], mean[f"{prefix}_ci_high"] = mean_auc_ci(dirs, n_bootstrap=nb, seed=boot_seed)
        if len(runs.seeds) > 1:
            per_class = [[read_metrics(d).get("auc") for d in runs.piade(c, pr)] for c in classes]
            mean[f"{prefix}_seed_sd"] = _seed_sd(np.mean(np.array(per_class, dtype=float), axis=0))
    mean["paper_auc"] = paper_results.paper_ours_auc(paper_table, MEAN) if paper_table else None
    return mean


def section_table(section: Section, results_root: str | Path) -> pd.DataFrame:
    """The table of a section (see the module docstring for the columns), built from its runs.

    With several seeds, an AUC column is the mean over seeds, its interval a bootstrap of that mean
    (test images resampled within each seed's run), and ``<prefix>_seed_sd`` the seed-to-seed
    standard deviation beside it; the mean row's ``*_seed_sd`` is the spread over seeds of the mean
    over classes."""
    plan = section_plan(section, results_root)
    _, nv = ours_key(section)
    runs = _TableRuns(section, {(p.normal_class, p.variant): p for p in plan}, nv)
    paper_table = None if section.is_standin else section.paper_table
    presets = list(section.presets)
    nb, boot_seed = _n_bootstrap(section), int(section.run.get("seed", 0))
    df = pd.DataFrame([_class_row(runs, cls, presets, paper_table, nb, boot_seed) for cls in section.class_names()])
    df = pd.concat([df, pd.DataFrame([_mean_row(df, runs, presets, paper_table, nb, boot_seed)])], ignore_index=True)
    if paper_table:  # the paper's baseline columns, where the dataset is the paper's
        pb = paper_results.paper_baseline_columns(paper_table)
        if not pb.empty:
            key = df["class"].map(lambda c: paper_results.row_key(paper_table, c))
            for col in pb.columns:
                df[col] = key.map(pb[col])
    df["paper_auc"] = pd.to_numeric(df["paper_auc"], errors="coerce")
    validate_table(df)
    return df


def validate_table(df: pd.DataFrame) -> None:
    """Check a table against the schema; raises :class:`TableSchemaError` naming what is wrong."""
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise TableSchemaError(f"table lacks column(s) {missing}; required: {list(TABLE_COLUMNS)}")
    if list(df.columns[: len(TABLE_COLUMNS)]) != list(TABLE_COLUMNS):
        raise TableSchemaError(f"the first columns must be {list(TABLE_COLUMNS)}, got {list(df.columns[:6])}")
    if len(df) < 2 or str(df["class"].iloc[-1]) != MEAN:
        raise TableSchemaError("a table needs at least one class row and a final 'mean' row")
    if (df["class"].astype(str) == MEAN).sum() != 1:
        raise TableSchemaError("exactly one 'mean' row is allowed")
    if df["class"].iloc[:-1].duplicated().any():
        raise TableSchemaError(f"duplicate class rows: {df['class'][df['class'].duplicated()].tolist()}")
    auc_cols = [c for c in df.columns if c.endswith("_auc") or c.endswith("_ci_low") or c.endswith("_ci_high")]
    for c in auc_cols:
        v = pd.to_numeric(df[c], errors="coerce")
        if (df[c].notna() & v.isna()).any():
            raise TableSchemaError(f"column {c} holds non-numeric values")
        if ((v < 0) | (v > 1)).any():
            raise TableSchemaError(f"column {c} holds values outside [0, 1]")
    body = df.iloc[:-1]
    if body["ours_auc"].isna().any():
        raise TableSchemaError(f"ours_auc is empty for class(es) {body['class'][body['ours_auc'].isna()].tolist()}")
    ci_ok = body["ours_ci_low"].isna() | (
        (body["ours_ci_low"] <= body["ours_auc"] + 1e-9) & (body["ours_auc"] <= body["ours_ci_high"] + 1e-9)
    )
    if not ci_ok.all():
        raise TableSchemaError(
            f"ours_auc lies outside [ours_ci_low, ours_ci_high] for {body['class'][~ci_ok].tolist()}"
        )
    mean_expected = body["ours_auc"].astype(float).mean()
    if abs(float(df["ours_auc"].iloc[-1]) - mean_expected) > 1e-9:
        raise TableSchemaError(
            f"the mean row's ours_auc {df['ours_auc'].iloc[-1]} is not the mean of the class rows ({mean_expected})"
        )


# ---------------------------------------------------------------------------------------------
# Figure 4: one vs two instantiation vectors
# ---------------------------------------------------------------------------------------------
def figure4_table(section: Section, results_root: str | Path) -> pd.DataFrame:
    """AUC with 1 and 2 vectors per category, their paired difference, and the mean row."""
    if sorted(section.n_vectors) != [1, 2]:
        raise ValueError(f"section {section.name!r} has n_vectors {section.n_vectors}; Figure 4 compares [1, 2]")
    plan = section_plan(section, results_root)
    preset = section.presets[0]
    by = {(p.normal_class, p.variant): p.run_dir for p in plan if p.kind == "piade"}
    nb, seed = _n_bootstrap(section), int(section.run.get("seed", 0))
    rows, boots = [], []
    for i, cat in enumerate(section.class_names()):
        s0 = section.seed_list()[0]  # Figure 4 compares the first seed's runs
        d1, d2 = by[(cat, folders.piade_variant(preset, 1, s0))], by[(cat, folders.piade_variant(preset, 2, s0))]
        m1, m2 = read_metrics(d1), read_metrics(d2)
        pair = paired_scores(d1, d2)
        b = bootstrap_aucs(pair["label"].to_numpy(), pair[["a", "b"]].to_numpy(), nb, seed + i) if nb > 0 else None
        boots.append(b)
        lo, hi = percentile_interval(b[:, 1] - b[:, 0]) if b is not None else (None, None)
        rows.append(
            {
                "dataset": section.dataset,
                "category": cat,
                "auc_1vec": m1.get("auc"),
                "auc_1vec_ci_low": m1.get("auc_ci_low"),
                "auc_1vec_ci_high": m1.get("auc_ci_high"),
                "auc_2vec": m2.get("auc"),
                "auc_2vec_ci_low": m2.get("auc_ci_low"),
                "auc_2vec_ci_high": m2.get("auc_ci_high"),
                "diff": m2["auc"] - m1["auc"],
                "diff_ci_low": lo,
                "diff_ci_high": hi,
                "paper_auc_1vec": None,
                "paper_auc_2vec": None,
            }
        )
    df = pd.DataFrame(rows)
    mean: dict[str, Any] = {
        "dataset": section.dataset,
        "category": MEAN,
        "paper_auc_1vec": None,
        "paper_auc_2vec": None,
    }
    for col in ("auc_1vec", "auc_2vec", "diff"):
        mean[col] = float(df[col].mean())
    if nb > 0:
        stacked = np.stack(boots)  # (categories, n_bootstrap, 2)
        avg = stacked.mean(axis=0)
        mean["auc_1vec_ci_low"], mean["auc_1vec_ci_high"] = percentile_interval(avg[:, 0])
        mean["auc_2vec_ci_low"], mean["auc_2vec_ci_high"] = percentile_interval(avg[:, 1])
        mean["diff_ci_low"], mean["diff_ci_high"] = percentile_interval(avg[:, 1] - avg[:, 0])
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)[list(FIGURE4_COLUMNS)]
    for c in ("paper_auc_1vec", "paper_auc_2vec"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    validate_figure4(df)
    return df


def validate_figure4(df: pd.DataFrame) -> None:
    """Check a Figure 4 table against the schema; raises :class:`TableSchemaError`."""
    if list(df.columns) != list(FIGURE4_COLUMNS):
        raise TableSchemaError(f"figure4 columns must be {list(FIGURE4_COLUMNS)}, got {list(df.columns)}")
    if len(df) < 2 or str(df["category"].iloc[-1]) != MEAN:
        raise TableSchemaError("figure4 needs at least one category row and a final 'mean' row")
    body = df.iloc[:-1]
    if (body["diff"] - (body["auc_2vec"] - body["auc_1vec"])).abs().max() > 1e-9:
        raise TableSchemaError("diff must equal auc_2vec - auc_1vec")
    for c in ("auc_1vec", "auc_2vec"):
        v = pd.to_numeric(df[c], errors="coerce")
        if v.isna().any() or ((v < 0) | (v > 1)).any():
            raise TableSchemaError(f"{c} must be an AUC in [0, 1] on every row")


def figure4_statement(df: pd.DataFrame) -> str:
    """One paragraph: our measured 1-vs-2-vector difference beside the paper's claim."""
    body, mean = df.iloc[:-1], df.iloc[-1]
    n_better = int((body["diff"] > 0).sum())
    ci = ""
    if pd.notna(mean["diff_ci_low"]):
        ci = f" (95% bootstrap interval {mean['diff_ci_low']:+.3f} to {mean['diff_ci_high']:+.3f})"
    rel = mean["diff"] / mean["auc_1vec"] if mean["auc_1vec"] else float("nan")
    verdict = (
        "an improvement whose interval excludes zero"
        if pd.notna(mean["diff_ci_low"]) and mean["diff_ci_low"] > 0
        else "a worsening whose interval excludes zero"
        if pd.notna(mean["diff_ci_high"]) and mean["diff_ci_high"] < 0
        else "a difference whose interval includes zero (not significant at this size)"
    )
    return (
        f"Measured: two vectors minus one vector = {mean['diff']:+.3f} AUC on average over {len(body)} "
        f"categories{ci}, {rel:+.1%} relative to one vector; two vectors are better in {n_better} of "
        f'{len(body)} categories: {verdict}. Paper: "{paper_results.FIGURE4_CLAIM}" '
        f"(+{paper_results.FIGURE4_MEAN_IMPROVEMENT:.0%}; whether absolute or relative is not stated, and the "
        f"per-category values are not given numerically)."
    )


# ---------------------------------------------------------------------------------------------
# comparison with the paper
# ---------------------------------------------------------------------------------------------
def paper_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """class, ours_auc, ours CI, paper_auc, difference and whether the paper's value lies inside our
    interval; rows without a paper value are kept with empty comparison columns."""
    out = table[["class", "ours_auc", "ours_ci_low", "ours_ci_high", "paper_auc"]].copy()
    out["ours_minus_paper"] = out["ours_auc"] - out["paper_auc"]
    inside = (out["paper_auc"] >= out["ours_ci_low"]) & (out["paper_auc"] <= out["ours_ci_high"])
    out["paper_inside_ci"] = inside.where(out["paper_auc"].notna() & out["ours_ci_low"].notna())
    return out


def comparison_statement(section: Section, table: pd.DataFrame) -> str:
    """A sentence on how our mean compares with the paper's (or why no comparison is possible)."""
    mean = table.iloc[-1]
    ours = f"our mean AUC {mean['ours_auc']:.3f}"
    if pd.notna(mean.get("ours_ci_low")):
        ours += f" (95% CI {mean['ours_ci_low']:.3f}-{mean['ours_ci_high']:.3f})"
    if section.is_standin:
        return (
            f"{section.name}: {ours} on the stand-in dataset {section.dataset!r}; the paper measured "
            f"{section.paper_dataset!r}, so its numbers are shown for reference only and not compared."
        )
    if pd.isna(mean["paper_auc"]):
        return f"{section.name}: {ours}; the paper reports no value for this experiment."
    d = mean["ours_auc"] - mean["paper_auc"]
    inside = pd.notna(mean.get("ours_ci_low")) and mean["ours_ci_low"] <= mean["paper_auc"] <= mean["ours_ci_high"]
    return (
        f"{section.name}: {ours} vs the paper's {mean['paper_auc']:.3f} ({d:+.3f}); the paper's value is "
        f"{'inside' if inside else 'outside'} our interval."
    )


def paper_reference_table(paper_table: str) -> pd.DataFrame:
    """The paper's table as printed (for display beside ours)."""
    return {
        "table2": paper_results.table2,
        "table3": paper_results.table3,
        "table4": paper_results.table4,
        "mnist": paper_results.mnist_lsa,
    }[paper_table]()


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
TABLE_FILES = {"table2": "table2.csv", "table3": "table3.csv", "table4": "table4.csv", "figure4": "figure4.csv"}


def table_path(results_root: str | Path, section: str) -> Path:
    return Path(results_root) / "tables" / TABLE_FILES.get(section, f"{section}.csv")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a table CSV (atomically)."""
    (validate_figure4 if "category" in df.columns else validate_table)(df)
    return files.write_csv(path, df)


def save_frame(df: pd.DataFrame, path: str | Path) -> Path:
    """Write any frame (readings, reconstruction checks) as CSV, atomically, without a schema check."""
    return files.write_csv(path, df)


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"class": str, "category": str})
