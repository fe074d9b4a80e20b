"""AUROC with stratified bootstrap intervals, ROC curves, pixel AUROC and the metrics.json record.

* ``auroc_with_ci``: scikit-learn ``roc_auc_score`` with the anomalies (label 1) as positives,
  and a percentile bootstrap that resamples the normal and the anomalous test images
  *separately* (stratified), each with replacement and at its own size, so every resample holds
  both classes and the class balance of the test set is kept (:func:`bootstrap_aucs`, the one
  bootstrap of the project, also used by the tables' intervals over classes and seeds).
* Pixel AUROC is scikit-learn's over all test pixels (normal images included), on a seeded
  subsample when there are more than 2,000,000.

Pure numpy/pandas on scores: nothing here loads a model or a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from piade_lib.model.losses import TERMS

THRESHOLD_QUANTILE = 0.95
MAX_PIXELS = 2_000_000


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------
def _two_classes(labels: np.ndarray) -> bool:
    return bool(np.any(labels == 0) and np.any(labels == 1))


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, n_bootstrap: int, seed: int, chunk: int = 100) -> np.ndarray:
    """``(n_bootstrap, k)`` AUCs of ``k`` score columns (``scores`` is ``(n, k)``) on the same
    stratified resamples of the test images: normal and anomalous images are resampled separately,
    with replacement, each at its own size (the one bootstrap of the project: :func:`auroc_with_ci`'s
    interval and the tables' intervals over classes, seeds and readings all come from it).

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
        idx = np.concatenate(
            [neg[rng.integers(0, neg.size, (b, neg.size))], pos[rng.integers(0, pos.size, (b, pos.size))]], axis=1
        )
        for j in range(scores.shape[1]):
            ranks = rankdata(scores[idx, j], axis=1)
            out[start : start + b, j] = (ranks[:, neg.size :].sum(axis=1) - pos.size * (pos.size + 1) / 2) / (
                pos.size * neg.size
            )
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def auroc_with_ci(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC (anomalies = label 1 are the positives; higher score = more anomalous) with a
    stratified percentile-bootstrap interval.

    Returns ``{"auc", "low", "high"}``; ``low``/``high`` are None when ``n_bootstrap`` is 0. With a
    single class in ``labels`` the AUROC is undefined: all three are None and ``"note"`` says why.
    """
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got {sorted(set(np.unique(y)))}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int(np.sum(~np.isfinite(s)))} scores are NaN or infinite; cannot compute AUROC")
    if not _two_classes(y):
        which = "normal" if np.all(y == 0) else "anomalous"
        return {
            "auc": None,
            "low": None,
            "high": None,
            "note": f"AUROC undefined: the test set has only {which} images ({y.size})",
        }
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    auc = float(roc_auc_score(y, s))
    if n_bootstrap <= 0:
        return {"auc": auc, "low": None, "high": None}
    boots = bootstrap_aucs(y, s, n_bootstrap, seed)[:, 0]
    low, high = percentile_interval(boots, level)
    return {"auc": auc, "low": float(low), "high": float(high)}


def roc_curve_data(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """ROC curve (``fpr, tpr, threshold``) from scikit-learn; empty frame for a single class."""
    y = np.asarray(labels).astype(int).ravel()
    if not _two_classes(y):
        return pd.DataFrame({"fpr": [], "tpr": [], "threshold": []})
    fpr, tpr, thr = roc_curve(y, np.asarray(scores, dtype=np.float64).ravel())
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})


def pixel_auroc(
    maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, max_pixels: int = MAX_PIXELS, seed: int = 0
) -> float | None:
    """Pixel-level AUROC (mask 1 = anomalous pixel) over all pixels; a seeded uniform subsample of
    ``max_pixels`` pixels is used when there are more. None when the masks hold a single class."""
    m = np.asarray(maps, dtype=np.float32).ravel()
    y = (np.asarray(masks).ravel() > 0.5).astype(np.int8)
    if m.shape != y.shape:
        raise ValueError(f"maps ({m.size} pixels) and masks ({y.size} pixels) differ in size")
    if m.size > max_pixels:
        idx = np.sort(np.random.default_rng(seed).choice(m.size, max_pixels, replace=False))
        m, y = m[idx], y[idx]
    if not _two_classes(y):
        return None
    return float(roc_auc_score(y, m))


def reconstruction_summary(scores: pd.DataFrame) -> dict[str, Any]:
    """Has the model learned more than the mean image? From a scores frame with ``mse`` and
    ``mean_image_mse`` columns: ``normal_recon_mse`` (mean per-image MSE of the reconstructions of
    the normal test images), ``normal_mean_image_mse`` (the same with the train-mean image as the
    reconstruction), their ratio ``recon_to_mean_image`` (< 1: better than the mean image), and
    the AUROCs of the anomaly score (``auc``) and of the MSE term alone (``mse_auc``)."""
    labels = scores["label"].to_numpy().astype(int)
    normal = labels == 0
    out: dict[str, Any] = {
        "auc": auroc_with_ci(labels, scores["total"].to_numpy(), n_bootstrap=0)["auc"],
        "mse_auc": auroc_with_ci(labels, scores["mse"].to_numpy(), n_bootstrap=0)["auc"],
        "normal_recon_mse": float(scores.loc[normal, "mse"].mean()) if normal.any() else None,
        "normal_mean_image_mse": None,
        "recon_to_mean_image": None,
    }
    if "mean_image_mse" in scores and normal.any():
        mi = float(scores.loc[normal, "mean_image_mse"].mean())
        out["normal_mean_image_mse"] = mi
        out["recon_to_mean_image"] = out["normal_recon_mse"] / mi if mi > 0 else None
    return out


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def compute_metrics(
    scores: pd.DataFrame,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    terms: Iterable[str] | None = None,
    pixel: float | None = None,
    train_scores: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """metrics.json content from a scores frame (``label`` and ``total`` columns at least).

    Keys: auc, auc_ci_low, auc_ci_high, ci_level, n_bootstrap, n_normal, n_anomalous, pixel_auroc,
    term_auc, thresholds (95th percentiles of the total score on the normal train images and on the
    normal test images; the CLI's ``above_threshold`` uses them), and a note when AUROC is undefined.
    """
    if "label" not in scores or "total" not in scores:
        raise ValueError(f"scores need 'label' and 'total' columns, got {list(scores.columns)}")
    labels = scores["label"].to_numpy().astype(int)
    res = auroc_with_ci(labels, scores["total"].to_numpy(), n_bootstrap=n_bootstrap, level=level, seed=seed)
    term_names = [t for t in (terms if terms is not None else TERMS) if t in scores.columns]
    term_auc = {t: auroc_with_ci(labels, scores[t].to_numpy(), n_bootstrap=0)["auc"] for t in term_names}
    normal_test = scores.loc[labels == 0, "total"].to_numpy()
    thresholds: dict[str, Any] = {"quantile": THRESHOLD_QUANTILE, "train": None, "test_normal": None}
    if train_scores is not None and len(train_scores):
        thresholds["train"] = float(np.quantile(np.asarray(train_scores, dtype=np.float64), THRESHOLD_QUANTILE))
    if normal_test.size:
        thresholds["test_normal"] = float(np.quantile(normal_test, THRESHOLD_QUANTILE))
    metrics: dict[str, Any] = {
        "auc": res["auc"],
        "auc_ci_low": res["low"],
        "auc_ci_high": res["high"],
        "ci_level": level,
        "n_bootstrap": int(n_bootstrap) if res["auc"] is not None else 0,
        "n_normal": int(np.sum(labels == 0)),
        "n_anomalous": int(np.sum(labels == 1)),
        "pixel_auroc": pixel,
        "term_auc": term_auc,
        "thresholds": thresholds,
    }
    if "note" in res:
        metrics["note"] = res["note"]
    return metrics


METRICS_KEYS: tuple[str, ...] = (
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "ci_level",
    "n_bootstrap",
    "n_normal",
    "n_anomalous",
    "pixel_auroc",
    "term_auc",
)
# written for PIADE runs besides METRICS_KEYS: has the model learned more than the train-mean image?
RECON_KEYS: tuple[str, ...] = ("normal_recon_mse", "normal_mean_image_mse", "recon_to_mean_image")
