"""Intervals over classes and seeds: bootstrap of the mean AUROC of several runs (each run's test set
resampled with :func:`piade_lib.metrics.bootstrap_aucs`), and paired scores of two runs on the
same test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from piade_lib.metrics import bootstrap_aucs, percentile_interval
from piade_lib.reporting.results import CI_LEVEL, read_scores


# ---------------------------------------------------------------------------------------------
# bootstrap of means and differences
# ---------------------------------------------------------------------------------------------
def mean_auc_ci(
    run_dirs: Sequence[str | Path], n_bootstrap: int = 1000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float | None, float | None]:
    """Mean AUC over runs (classes) and a percentile-bootstrap interval of that mean."""
    frames = [read_scores(d) for d in run_dirs]
    aucs = [float(roc_auc_score(f["label"], f["total"])) for f in frames]
    if n_bootstrap <= 0 or not frames:
        return float(np.mean(aucs)) if aucs else float("nan"), None, None
    boots = np.column_stack(
        [
            bootstrap_aucs(f["label"].to_numpy(), f["total"].to_numpy(), n_bootstrap, seed + i)[:, 0]
            for i, f in enumerate(frames)
        ]
    )
    lo, hi = percentile_interval(boots.mean(axis=1), level)
    return float(np.mean(aucs)), lo, hi


def paired_scores(run_a: str | Path, run_b: str | Path) -> pd.DataFrame:
    """Test scores of two runs on the same images: ``id, label, a, b`` (an error if the test sets differ)."""
    a, b = read_scores(run_a), read_scores(run_b)
    if set(a["id"]) != set(b["id"]):
        raise ValueError(f"{run_a} and {run_b} were tested on different images; cannot pair them")
    m = a[["id", "label", "total"]].merge(b[["id", "label", "total"]], on=["id", "label"], suffixes=("_a", "_b"))
    return m.rename(columns={"total_a": "a", "total_b": "b"})
