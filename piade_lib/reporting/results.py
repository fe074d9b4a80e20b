"""Reading run folders for reports: the plan of a section with each run's folder, metrics.json and
scores.csv, and the frame of a section's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from piade_lib.engine import files
from piade_lib.experiments.plan import PlannedRun, planned_runs
from piade_lib.experiments.profiles import Section

TABLE_COLUMNS = ("dataset", "class", "ours_auc", "ours_ci_low", "ours_ci_high", "paper_auc")
MEAN = "mean"
CI_LEVEL = 0.95


class MissingRunsError(RuntimeError):
    """A table was asked for before its runs finished."""


# ---------------------------------------------------------------------------------------------
# run folders
# ---------------------------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise MissingRunsError(f"{path} not found: the run has not finished")
    return files.read_json(path)


def _require_finished(plan: Sequence[PlannedRun], what: str) -> None:
    missing = [p for p in plan if not (p.run_dir / "metrics.json").is_file()]
    if missing:
        listing = "\n  ".join(str(p.run_dir) for p in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise MissingRunsError(
            f"{len(missing)} run(s) of {what} have no metrics.json yet:\n  {listing}{more}\n"
            "Train them first: run notebooks/02_training.ipynb (04_ablation.ipynb for the ablation, "
            "07_readings.ipynb for the readings) "
            "or ./run_all.sh PROFILE, which skips finished runs and resumes interrupted ones."
        )


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
        rows.append(
            {
                "class": p.normal_class,
                "kind": p.kind,
                "variant": p.variant,
                "preset": p.preset,
                "seed": p.seed,
                "n_vectors": p.n_vectors,
                "baseline": p.baseline,
                "auc": m.get("auc"),
                "auc_ci_low": m.get("auc_ci_low"),
                "auc_ci_high": m.get("auc_ci_high"),
                "n_normal": m.get("n_normal"),
                "n_anomalous": m.get("n_anomalous"),
                "pixel_auroc": m.get("pixel_auroc"),
                "run_dir": str(p.run_dir),
            }
        )
    return pd.DataFrame(rows)


def read_scores(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "scores.csv"
    if not path.is_file():
        raise MissingRunsError(f"{path} not found: the run has not been evaluated")
    return pd.read_csv(path, dtype={"id": str})
