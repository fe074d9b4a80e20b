"""Tables and figures from run folders, beside the paper's numbers.

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

Command line (used by ``run_all.sh``)::

    python -m piade_lib.reporting readme PROFILE [--results-root DIR] [--wall-time SECONDS]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from . import paper_results, runs
from .experiments import PlannedRun, planned_runs
from .profiles import Profile, Section, load_profile

TABLE_COLUMNS = ("dataset", "class", "ours_auc", "ours_ci_low", "ours_ci_high", "paper_auc")
FIGURE4_COLUMNS = ("dataset", "category", "auc_1vec", "auc_1vec_ci_low", "auc_1vec_ci_high", "auc_2vec",
                   "auc_2vec_ci_low", "auc_2vec_ci_high", "diff", "diff_ci_low", "diff_ci_high",
                   "paper_auc_1vec", "paper_auc_2vec")
MEAN = "mean"
CI_LEVEL = 0.95


class MissingRunsError(RuntimeError):
    """A table was asked for before its runs finished."""


class TableSchemaError(ValueError):
    """A table does not follow the documented CSV schema."""


# ---------------------------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise MissingRunsError(f"{path} not found: the run has not finished")
    return runs.read_json(path)


def _require_finished(plan: Sequence[PlannedRun], what: str) -> None:
    missing = [p for p in plan if not (p.run_dir / "metrics.json").is_file()]
    if missing:
        listing = "\n  ".join(str(p.run_dir) for p in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingRunsError(
            f"{len(missing)} run(s) of {what} have no metrics.json yet:\n  {listing}{more}\n"
            "Train them first: run notebooks/02_training.ipynb (04_ablation.ipynb for the ablation, "
            "07_readings.ipynb for the readings) "
            "or ./run_all.sh PROFILE, which skips finished runs and resumes interrupted ones.")


def section_plan(section: Section, results_root: str | Path) -> list[PlannedRun]:
    """The section's runs (see :func:`experiments.planned_runs`); all must have finished."""
    plan = planned_runs(section, results_root)
    _require_finished(plan, f"section {section.name!r}")
    return plan


def ours_key(section: Section) -> tuple[str, int]:
    """The (preset, n_vectors) reported as "ours": the section's first preset, most vectors."""
    return section.presets[0], max(section.n_vectors)


def runs_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """One row per finished run of a section: class, kind, variant, preset, n_vectors, baseline,
    auc, auc_ci_low, auc_ci_high, n_normal, n_anomalous, pixel_auroc, run_dir."""
    from tqdm.auto import tqdm

    rows = []
    plan = section_plan(section, results_root)
    for p in tqdm(plan, desc=f"{section.name}: reading run folders", unit="run", leave=False, disable=len(plan) < 2):
        m = read_metrics(p.run_dir)
        rows.append({"class": p.normal_class, "kind": p.kind, "variant": p.variant, "preset": p.preset, "seed": p.seed,
                     "n_vectors": p.n_vectors, "baseline": p.baseline, "auc": m.get("auc"),
                     "auc_ci_low": m.get("auc_ci_low"), "auc_ci_high": m.get("auc_ci_high"),
                     "n_normal": m.get("n_normal"), "n_anomalous": m.get("n_anomalous"),
                     "pixel_auroc": m.get("pixel_auroc"), "run_dir": str(p.run_dir)})
    return pd.DataFrame(rows)


def read_scores(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "scores.csv"
    if not path.is_file():
        raise MissingRunsError(f"{path} not found: the run has not been evaluated")
    return pd.read_csv(path, dtype={"id": str})


# ---------------------------------------------------------------------------------------------
# bootstrap of means and differences
# ---------------------------------------------------------------------------------------------
def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, n_bootstrap: int, seed: int,
                   chunk: int = 100) -> np.ndarray:
    """``(n_bootstrap, k)`` AUCs of ``k`` score columns (``scores`` is ``(n, k)``) on the same
    stratified resamples of the test images: normal and anomalous images are resampled separately,
    with replacement, each at its own size (as ``evaluate.auroc_with_ci`` does for one run).

    The AUC of a resample is the Mann-Whitney statistic from average ranks, which equals
    scikit-learn's ``roc_auc_score`` (ties count one half), computed for many resamples at once.
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(labels), -1)
    neg, pos = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if neg.size == 0 or pos.size == 0:
        raise ValueError("a bootstrap of the AUROC needs normal and anomalous test images")
    rng = np.random.default_rng(seed)
    out = np.empty((n_bootstrap, scores.shape[1]))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([neg[rng.integers(0, neg.size, (b, neg.size))],
                              pos[rng.integers(0, pos.size, (b, pos.size))]], axis=1)
        for j in range(scores.shape[1]):
            ranks = rankdata(scores[idx, j], axis=1)
            out[start:start + b, j] = (ranks[:, neg.size:].sum(axis=1) - pos.size * (pos.size + 1) / 2) / (
                pos.size * neg.size)
    return out


def _interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_auc_ci(run_dirs: Sequence[str | Path], n_bootstrap: int = 1000, seed: int = 0,
                level: float = CI_LEVEL) -> tuple[float, float | None, float | None]:
    """Mean AUC over runs (classes) and a percentile-bootstrap interval of that mean."""
    frames = [read_scores(d) for d in run_dirs]
    aucs = [float(roc_auc_score(f["label"], f["total"])) for f in frames]
    if n_bootstrap <= 0 or not frames:
        return float(np.mean(aucs)) if aucs else float("nan"), None, None
    boots = np.column_stack([bootstrap_aucs(f["label"].to_numpy(), f["total"].to_numpy(), n_bootstrap, seed + i)[:, 0]
                             for i, f in enumerate(frames)])
    lo, hi = _interval(boots.mean(axis=1), level)
    return float(np.mean(aucs)), lo, hi


def paired_scores(run_a: str | Path, run_b: str | Path) -> pd.DataFrame:
    """Test scores of two runs on the same images: ``id, label, a, b`` (an error if the test sets differ)."""
    a, b = read_scores(run_a), read_scores(run_b)
    if set(a["id"]) != set(b["id"]):
        raise ValueError(f"{run_a} and {run_b} were tested on different images; cannot pair them")
    m = a[["id", "label", "total"]].merge(b[["id", "label", "total"]], on=["id", "label"], suffixes=("_a", "_b"))
    return m.rename(columns={"total_a": "a", "total_b": "b"})


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


def section_table(section: Section, results_root: str | Path) -> pd.DataFrame:
    """The table of a section (see the module docstring for the columns), built from its runs.

    With several seeds, an AUC column is the mean over seeds, its interval a bootstrap of that mean
    (test images resampled within each seed's run), and ``<prefix>_seed_sd`` the seed-to-seed
    standard deviation beside it; the mean row's ``*_seed_sd`` is the spread over seeds of the mean
    over classes."""
    plan = section_plan(section, results_root)
    preset0, nv = ours_key(section)
    classes = section.class_names()
    seeds = section.seed_list()
    paper_table = None if section.is_standin else section.paper_table
    by = {(p.normal_class, p.variant): p for p in plan}
    extra_presets = list(section.presets[1:])
    nb, boot_seed = _n_bootstrap(section), int(section.run.get("seed", 0))
    multi = len(seeds) > 1

    def piade(pr: str):
        return lambda s: runs.piade_variant(pr, nv, s)

    rows = []
    for cls in classes:
        ours = _over_seeds(_seed_runs(by, cls, piade(preset0), seeds), nb, boot_seed)
        paper = paper_results.paper_ours_auc(paper_table, cls) if paper_table else None
        row: dict[str, Any] = {"dataset": section.dataset, "class": cls, "ours_auc": ours["auc"],
                               "ours_ci_low": ours["low"], "ours_ci_high": ours["high"], "paper_auc": paper}
        if multi:
            row["ours_seed_sd"] = ours["sd"]
        for pr in extra_presets:
            m = _over_seeds(_seed_runs(by, cls, piade(pr), seeds), nb, boot_seed)
            row.update({f"{pr}_auc": m["auc"], f"{pr}_ci_low": m["low"], f"{pr}_ci_high": m["high"]})
            if multi:
                row[f"{pr}_seed_sd"] = m["sd"]
        for bl in section.baselines:
            aucs = [read_metrics(d).get("auc")
                    for d in _seed_runs(by, cls, lambda s, bl=bl: runs.baseline_variant(bl, s), seeds)]
            row[f"{bl}_auc"] = float(np.mean(aucs))
        first = ours["first"]
        row["n_normal"], row["n_anomalous"] = first.get("n_normal"), first.get("n_anomalous")
        if first.get("pixel_auroc") is not None:
            row["ours_pixel_auroc"] = first.get("pixel_auroc")
        rows.append(row)
    df = pd.DataFrame(rows)

    # the mean row: plain means, bootstrap intervals of the mean for the PIADE columns
    mean: dict[str, Any] = {"dataset": section.dataset, "class": MEAN}
    for col in df.columns:
        if col not in ("dataset", "class") and pd.api.types.is_numeric_dtype(df[col]) and df[col].notna().any():
            mean[col] = float(df[col].mean()) if col not in ("n_normal", "n_anomalous") else int(df[col].sum())
    for pr, prefix in [(preset0, "ours")] + [(p, p) for p in extra_presets]:
        dirs = [d for c in classes for d in _seed_runs(by, c, piade(pr), seeds)]
        _, mean[f"{prefix}_ci_low"], mean[f"{prefix}_ci_high"] = mean_auc_ci(dirs, n_bootstrap=nb, seed=boot_seed)
        if multi:
            per_seed = [np.mean([read_metrics(by[(c, piade(pr)(s))].run_dir).get("auc") for c in classes])
                        for s in seeds]
            mean[f"{prefix}_seed_sd"] = _seed_sd(per_seed)
    mean["paper_auc"] = paper_results.paper_ours_auc(paper_table, MEAN) if paper_table else None
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)

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
    ci_ok = body["ours_ci_low"].isna() | ((body["ours_ci_low"] <= body["ours_auc"] + 1e-9)
                                          & (body["ours_auc"] <= body["ours_ci_high"] + 1e-9))
    if not ci_ok.all():
        raise TableSchemaError(f"ours_auc lies outside [ours_ci_low, ours_ci_high] for "
                               f"{body['class'][~ci_ok].tolist()}")
    mean_expected = body["ours_auc"].astype(float).mean()
    if abs(float(df["ours_auc"].iloc[-1]) - mean_expected) > 1e-9:
        raise TableSchemaError(f"the mean row's ours_auc {df['ours_auc'].iloc[-1]} is not the mean of the class rows "
                               f"({mean_expected})")


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
        d1, d2 = by[(cat, runs.piade_variant(preset, 1, s0))], by[(cat, runs.piade_variant(preset, 2, s0))]
        m1, m2 = read_metrics(d1), read_metrics(d2)
        pair = paired_scores(d1, d2)
        b = bootstrap_aucs(pair["label"].to_numpy(), pair[["a", "b"]].to_numpy(), nb, seed + i) if nb > 0 else None
        boots.append(b)
        lo, hi = _interval(b[:, 1] - b[:, 0]) if b is not None else (None, None)
        rows.append({"dataset": section.dataset, "category": cat, "auc_1vec": m1.get("auc"),
                     "auc_1vec_ci_low": m1.get("auc_ci_low"), "auc_1vec_ci_high": m1.get("auc_ci_high"),
                     "auc_2vec": m2.get("auc"), "auc_2vec_ci_low": m2.get("auc_ci_low"),
                     "auc_2vec_ci_high": m2.get("auc_ci_high"), "diff": m2["auc"] - m1["auc"],
                     "diff_ci_low": lo, "diff_ci_high": hi, "paper_auc_1vec": None, "paper_auc_2vec": None})
    df = pd.DataFrame(rows)
    mean: dict[str, Any] = {"dataset": section.dataset, "category": MEAN, "paper_auc_1vec": None, "paper_auc_2vec": None}
    for col in ("auc_1vec", "auc_2vec", "diff"):
        mean[col] = float(df[col].mean())
    if nb > 0:
        stacked = np.stack(boots)  # (categories, n_bootstrap, 2)
        avg = stacked.mean(axis=0)
        mean["auc_1vec_ci_low"], mean["auc_1vec_ci_high"] = _interval(avg[:, 0])
        mean["auc_2vec_ci_low"], mean["auc_2vec_ci_high"] = _interval(avg[:, 1])
        mean["diff_ci_low"], mean["diff_ci_high"] = _interval(avg[:, 1] - avg[:, 0])
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
    verdict = ("an improvement whose interval excludes zero" if pd.notna(mean["diff_ci_low"]) and mean["diff_ci_low"] > 0
               else "a worsening whose interval excludes zero" if pd.notna(mean["diff_ci_high"]) and mean["diff_ci_high"] < 0
               else "a difference whose interval includes zero (not significant at this size)")
    return (f"Measured: two vectors minus one vector = {mean['diff']:+.3f} AUC on average over {len(body)} "
            f"categories{ci}, {rel:+.1%} relative to one vector; two vectors are better in {n_better} of "
            f"{len(body)} categories: {verdict}. Paper: \"{paper_results.FIGURE4_CLAIM}\" "
            f"(+{paper_results.FIGURE4_MEAN_IMPROVEMENT:.0%}; whether absolute or relative is not stated, and the "
            f"per-category values are not given numerically).")


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
        return (f"{section.name}: {ours} on the stand-in dataset {section.dataset!r}; the paper measured "
                f"{section.paper_dataset!r}, so its numbers are shown for reference only and not compared.")
    if pd.isna(mean["paper_auc"]):
        return f"{section.name}: {ours}; the paper reports no value for this experiment."
    d = mean["ours_auc"] - mean["paper_auc"]
    inside = pd.notna(mean.get("ours_ci_low")) and mean["ours_ci_low"] <= mean["paper_auc"] <= mean["ours_ci_high"]
    return (f"{section.name}: {ours} vs the paper's {mean['paper_auc']:.3f} ({d:+.3f}); the paper's value is "
            f"{'inside' if inside else 'outside'} our interval.")


def paper_reference_table(paper_table: str) -> pd.DataFrame:
    """The paper's table as printed (for display beside ours)."""
    return {"table2": paper_results.table2, "table3": paper_results.table3,
            "table4": paper_results.table4, "mnist": paper_results.mnist_lsa}[paper_table]()


# ---------------------------------------------------------------------------------------------
# data summaries and sample grids (notebook 01)
# ---------------------------------------------------------------------------------------------
def _task(run_kwargs: dict[str, Any]):
    from .train import RunConfig, task_from_config

    return task_from_config(RunConfig(**run_kwargs).resolved().to_dict())


def split_counts(section: Section) -> pd.DataFrame:
    """Per class of a section: train / test-normal / test-anomalous counts after limits, and notes."""
    rows = []
    seen = set()
    for kw in section.run_configs():
        if kw["normal_class"] in seen:
            continue
        seen.add(kw["normal_class"])
        task, train, test = _task(kw)
        all_labels = task.manifest["test_labels"]
        labels = [all_labels[i] for i in getattr(test, "indices", range(len(all_labels)))]
        rows.append({"section": section.name, "dataset": section.dataset, "protocol": task.protocol,
                     "class": kw["normal_class"], "n_train": len(train), "n_test_normal": labels.count(0),
                     "n_test_anomalous": labels.count(1), "image_size": task.image_size,
                     "masks": task.has_masks, "stand-in": task.manifest.get("standin")})
    return pd.DataFrame(rows)


def distinct_datasets(profile: Profile, names: Iterable[str]) -> list[Section]:
    """The first section of each (dataset, protocol) among ``names`` (for one sample grid each)."""
    out: dict[tuple, Section] = {}
    for n in names:
        s = profile.sections[n]
        out.setdefault((s.dataset, s.protocol), s)
    return list(out.values())


def dataset_note(section: Section) -> str:
    """The data package's note on a section's dataset and protocol (stand-in or not, protocol)."""
    task, _, _ = _task(section.run_configs()[0])
    return str(task.manifest.get("note", ""))


def _to_img(t) -> np.ndarray:
    a = t.detach().float().cpu().clamp(0, 1).numpy()
    return np.transpose(a, (1, 2, 0))


def plot_samples(section: Section, n: int = 6, normal_class: str | None = None):
    """A grid: normal train images, normal test images, anomalous test images (+ their masks when the
    dataset has them) of one class of a section. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    kws = section.run_configs()
    kw = next((k for k in kws if k["normal_class"] == normal_class), kws[0]) if normal_class else kws[0]
    task, train, test = _task(kw)
    normals = [test[i] for i in range(len(test)) if test[i]["label"] == 0][:n]
    anomalies = [test[i] for i in range(len(test)) if test[i]["label"] == 1][:n]
    rows = [("train (normal)", [train[i]["image"] for i in range(min(n, len(train)))]),
            ("test normal", [it["image"] for it in normals]), ("test anomalous", [it["image"] for it in anomalies])]
    if task.has_masks:
        rows.append(("defect masks", [it["mask"].repeat(3, 1, 1) for it in anomalies]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(_to_img(imgs[c]), interpolation="nearest")
        axes[r, 0].set_title(title, fontsize=9, loc="left")
    fig.suptitle(f"{section.name}: {section.dataset} / normal class {kw['normal_class']!r}", fontsize=10)
    fig.tight_layout()
    return fig


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
    fig, axes = plt.subplots(len(variants), len(terms), figsize=(3.2 * len(terms), 2.6 * len(variants)),
                             squeeze=False)
    for r, v in enumerate(variants):
        for c, t in enumerate(terms):
            ax = axes[r, c]
            d = long[(long["variant"] == v) & (long["term"] == t)]
            sns.lineplot(data=d, x="epoch", y="loss", hue="class", marker="o", ax=ax,
                         legend=with_legend and r == 0 and c == len(terms) - 1)
            ax.set_title(f"{v}: {t}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    leg = axes[0, -1].get_legend()
    if leg is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7, title="class")
    fig.suptitle(f"{section.name} ({section.dataset}): training loss per epoch"
                 + ("" if with_legend else " (one line per class)"), fontsize=10)
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
    import matplotlib.pyplot as plt

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
    df["model"] = [p.variant.removesuffix(runs.seed_suffix(p.seed)) for p in section_plan(section, results_root)]
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
    ax.set_xticks(np.arange(len(classes)), classes, rotation=90 if len(classes) > 15 else 0,
                  fontsize=6 if len(classes) > 15 else 9)
    what = f"mean over {len(section.seed_list())} seeds, bars: seed range" if multi else "95% CI"
    ax.set(ylabel=f"AUROC ({what})", xlabel="normal class", ylim=(min(0.0, ax.get_ylim()[0]), 1.02),
           title=f"{section.name} ({section.dataset}): per-class AUROC")
    ax.legend(fontsize=7, ncol=min(4, len(models)))
    fig.tight_layout()
    return fig


def plot_score_histograms(section: Section, results_root: str | Path, max_classes: int = 10):
    """Anomaly-score histograms, normal vs anomalous test images, of the "ours" run per class."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    preset, nv = ours_key(section)
    variant = runs.piade_variant(preset, nv, section.seed_list()[0])
    plan = [p for p in section_plan(section, results_root) if p.variant == variant]
    plan = plan[:max_classes]
    fig, axes = _panel_grid(len(plan), max_cols=5, panel_size=(3.0, 2.4))
    for ax, p in zip(axes.ravel(), plan):
        s = read_scores(p.run_dir).assign(kind=lambda f: f["label"].map({0: "normal", 1: "anomalous"}))
        sns.histplot(data=s, x="total", hue="kind", stat="density", common_norm=False, element="step",
                     hue_order=["normal", "anomalous"], ax=ax, bins=20)
        ax.set(title=f"{p.normal_class} (AUC {read_metrics(p.run_dir)['auc']:.2f})", xlabel="anomaly score")
        ax.title.set_fontsize(9)
    fig.suptitle(f"{section.name} ({section.dataset}), {preset}-v{nv}: score = mse + perceptual + (1 - SSIM)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def term_auc_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """AUROC of each loss term used alone as the score (metrics.json term_auc), PIADE runs."""
    rows = []
    for p in section_plan(section, results_root):
        if p.kind == "piade":
            m = read_metrics(p.run_dir)
            rows.append({"class": p.normal_class, "variant": p.variant, **(m.get("term_auc") or {}),
                         "pixel_auroc": m.get("pixel_auroc")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Figure 3 (reconstructions) and Figure 4 (plot)
# ---------------------------------------------------------------------------------------------
def reconstructions(run_dir: str | Path, n: int = 4, device: str = "cpu") -> dict[str, Any]:
    """``n`` normal and ``n`` anomalous test images of a PIADE run, their reconstructions, scores
    and (datasets with masks) pixel anomaly maps and masks, as CPU tensors."""
    import torch

    from .evaluate import anomaly_map, load_trained
    from .train import task_from_config

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
        out[name] = {"images": x, "recon": recon.clamp(0, 1), "ids": [it["id"] for it in items],
                     "scores": [float(scores.loc[it["id"], "total"]) if it["id"] in scores.index else float("nan")
                                for it in items],
                     "masks": torch.stack([it["mask"] for it in items]),
                     "maps": anomaly_map(model, x) if task.has_masks else None}
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
        variant = runs.piade_variant(preset, nv, s.seed_list()[0])
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
                rows.append(("anomalous: 1-SSIM map", [m.repeat(3, 1, 1) / max(float(m.max()), 1e-6) for m in d["maps"]], None))
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
    ax.set(ylabel="AUROC (95% CI)", ylim=(0, 1.05),
           title=f"Figure 4: one vs two instantiation vectors ({df['dataset'].iloc[0]})")
    mean = df.iloc[-1]
    note = f"Mean difference (two - one) {mean['diff']:+.3f}"
    if pd.notna(mean["diff_ci_low"]):
        note += f", 95% CI [{mean['diff_ci_low']:+.3f}, {mean['diff_ci_high']:+.3f}]"
    note += ". Paper: two vectors better in all six categories, +9% on average (its bar values are not published)."
    fig.text(0.01, 0.01, textwrap.fill(note, 95), fontsize=7, va="bottom")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
TABLE_FILES = {"table2": "table2.csv", "table3": "table3.csv", "table4": "table4.csv", "figure4": "figure4.csv"}


def table_path(results_root: str | Path, section: str) -> Path:
    return Path(results_root) / "tables" / TABLE_FILES.get(section, f"{section}.csv")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a table CSV (atomically)."""
    (validate_figure4 if "category" in df.columns else validate_table)(df)
    return runs.write_csv(path, df)


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"class": str, "category": str})


def save_figure(fig, path: str | Path, dpi: int = 130) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _git_commit() -> str:
    info = runs.git_info()
    if info is None:
        return "unknown (not a git checkout, or no commit yet)"
    return info["commit"] + (" (with uncommitted changes)" if info["dirty"] else "")


def _run_facts(results_root: Path) -> dict[str, Any]:
    """Devices, pretrained flags (of the PIADE runs) and run time recorded by the runs under results_root."""
    devices, pretrained, seconds, n = set(), set(), 0.0, 0
    for prov in sorted((results_root / "runs").glob("*/*/*/provenance.json")):
        if ".old-" in prov.parent.name:  # a run moved aside by --overwrite: not part of these results
            continue
        p = json.loads(prov.read_text())
        n += 1
        devices.add(p.get("device_name") or p.get("device") or "?")
        if not prov.parent.name.startswith("baseline-"):  # baselines use no pretrained weights
            pretrained.add(p.get("pretrained"))
        seconds += float(p.get("wall_seconds") or 0.0)
    return {"n_runs": n, "devices": sorted(devices), "pretrained": sorted(pretrained, key=str), "run_seconds": seconds}


def _md_table(df: pd.DataFrame) -> str:
    """A markdown table (floats to 3 decimals, empty cells for missing values), no extra dependency."""
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)):
            return f"{v:.3f}"
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def results_readme(profile: Profile, results_root: str | Path, wall_seconds: float | None = None) -> str:
    """The text of results/<profile>/README.md: what was run and the tables inline."""
    root = Path(results_root)
    facts = _run_facts(root)
    lines = [f"# PIADE results: profile `{profile.name}`", "",
             f"Generated by `./run_all.sh {profile.name}` on {_dt.date.today().isoformat()}. {profile.description}", "",
             "| | |", "|---|---|",
             f"| profile | `{profile.name}` (`configs/{profile.path.name}`) |",
             f"| git commit | {_git_commit()} |",
             f"| device | {', '.join(facts['devices']) or 'n/a'} |",
             f"| pretrained ImageNet weights | {', '.join(map(str, facts['pretrained'])) or 'n/a'} "
             f"({'as the paper' if facts['pretrained'] == [True] else 'NOT as the paper: random initialisation'}) |",
             f"| runs | {facts['n_runs']} run folders under `runs/`, {facts['run_seconds'] / 60:.1f} min of run time recorded |",
             f"| wall time of run_all.sh | {f'{wall_seconds / 60:.1f} min ({wall_seconds:.0f} s)' if wall_seconds is not None else 'n/a'} |",
             "", "## Datasets", "",
             "| section | dataset | paper's dataset | stand-in | classes | presets | vectors | seeds | budget per model |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in profile.sections.items():
        flips = f" (+{len(s.flips)} flipped readings)" if s.flips else ""
        lines.append(f"| {name} | {s.dataset} | {s.paper_dataset or '-'} | {'yes' if s.is_standin else 'no'} | "
                     f"{len(s.class_names())} | {', '.join(s.presets)}{flips} | {', '.join(map(str, s.n_vectors))} | "
                     f"{', '.join(map(str, s.seed_list()))} | {budget_text(s)} |")
    if any(s.is_standin for s in profile.sections.values()):
        lines += ["", "Stand-in datasets are offline substitutes (scikit-learn digits, scikit-image textures with "
                      "synthetic defects): they exercise the paper's protocols but their numbers are **not** "
                      "comparable with the paper's, so `paper_auc` is left empty for them."]
    lines += ["", "## Tables", "",
              "AUROC per normal class with 95% bootstrap intervals; the `mean` row's interval is a bootstrap of the "
              "mean over classes. `paper_*` columns are the paper's numbers (`piade_lib/paper_results.py`), given "
              "only where the dataset is the paper's.", ""]
    lines += _reconstruction_lines(root)
    for name, s in profile.sections.items():
        path = table_path(root, name)
        if not path.is_file():
            continue
        df = read_table(path)
        if "reading" in df.columns:
            from .readings import readings_markdown, readings_statement

            lines += [f"### {s.title} (`tables/{path.name}`)", "", readings_statement(df, s), "",
                      readings_markdown(df), ""]
            continue
        lines += [f"### {s.title} (`tables/{path.name}`)", "", _md_table(df), ""]
        if s.paper_table == "mnist":
            lines += [f"`paper_*` columns: {paper_results.MNIST_LSA_SOURCE}.", ""]
        if name == "figure4" or "category" in df.columns:
            lines += [figure4_statement(df), ""]
        elif name in ("table3",) and not s.is_standin:
            lines += [f"Note: {paper_results.TABLE3_SOURCE}.", ""]
    lines += ["## Figures", ""]
    for fig in sorted((root / "figures").glob("*.png"), key=lambda p: (not p.name.startswith("figure"), p.name)):
        lines += [f"![{fig.name}](figures/{fig.name})", ""]
    lines += ["## Notebooks", "", "Rendered (executed) notebooks with every plot: "
              + ", ".join(f"[`{p.name}`](notebooks/{p.name})" for p in sorted((root / "notebooks").glob("*.ipynb"))), ""]
    return "\n".join(lines)


def budget_text(s: Section) -> str:
    """A section's training budget per model, as a profile states it."""
    bs = s.run.get("batch_size")
    batch = f", batch {bs}" if bs else ""
    if s.run.get("steps") is not None:
        return f"{s.run['steps']} optimiser steps{batch}"
    return f"{s.run.get('epochs', 'preset')} epochs{batch}"


def _reconstruction_lines(root: Path) -> list[str]:
    """The README's check that the PIADE models learned more than the train-mean image."""
    path = table_path(root, "reconstruction_check")
    if not path.is_file():
        return []
    df = pd.read_csv(path, dtype={"class": str})
    ok = int(df["beats_mean_image"].fillna(False).astype(bool).sum())
    from .convergence import summarize_reconstruction_checks

    return ["### Did the models learn more than the mean image? (`tables/reconstruction_check.csv`)", "",
            f"**{ok} of {len(df)} PIADE runs** reconstruct their normal test images with a lower MSE than the mean "
            "of the training images (ratio `normal_recon_mse / normal_mean_image_mse` < 1; see notebook 06).", "",
            _md_table(summarize_reconstruction_checks([df])), ""]


def write_results_readme(profile: Profile, results_root: str | Path, wall_seconds: float | None = None) -> Path:
    return runs.atomic_write_text(Path(results_root) / "README.md", results_readme(profile, results_root, wall_seconds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m piade_lib.reporting")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("readme", help="write <results root>/README.md from the tables and run folders")
    r.add_argument("profile")
    r.add_argument("--results-root", default=None)
    r.add_argument("--wall-time", type=float, default=None, help="seconds run_all.sh took")
    args = ap.parse_args(argv)
    prof = load_profile(args.profile)
    path = write_results_readme(prof, args.results_root or prof.results_root, args.wall_time)
    print(f"[piade] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
