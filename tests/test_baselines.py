"""Baselines: PCA features, OC-SVM, KDE, convolutional autoencoders, and their run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from piade_lib.engine import baselines as bl
from piade_lib.engine import folders
from piade_lib.engine.lifecycle import run_baseline
from piade_lib.metrics import METRICS_KEYS

SPLIT = dict(limit_train=40, limit_test=60, n_bootstrap=20, device="cpu", progress=False)


pytestmark = pytest.mark.usefixtures("single_thread")


def _blobs(n: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(1, 3, 16, 16)
    base[..., 4:12, 4:12] = 0.8
    return (base + shift + 0.05 * torch.randn(n, 3, 16, 16, generator=g)).clamp(0, 1)


def test_pca_components_keep_variance_but_stay_below_n_train() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 50))
    pipe = bl.pca_features(x)
    assert pipe.named_steps["pca"].n_components_ == 5  # capped at n_train - 1
    low_rank = rng.normal(size=(100, 2)) @ rng.normal(size=(2, 50)) + 1e-3 * rng.normal(size=(100, 50))
    assert bl.pca_features(low_rank).named_steps["pca"].n_components_ == 2


def test_kde_bandwidth_grid_is_the_median_distance_without_a_dim_sized_temporary() -> None:
    import tracemalloc

    z = np.random.default_rng(0).normal(size=(400, 300))  # 400 x 400 x 300 float64 = 384 MB if broadcast
    kde = bl.KDEBaseline(n_bandwidths=3)
    tracemalloc.start()
    try:
        grid = kde.bandwidth_grid(z)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"bandwidth grid used {peak / 1e6:.0f} MB"
    med = np.median([np.linalg.norm(z[i] - z[j]) for i in range(400) for j in range(i + 1, 400)])
    assert np.allclose(grid, med * np.logspace(-2, np.log10(3.0), 3))


@pytest.mark.parametrize("name", ["ocsvm", "kde"])
def test_shallow_baselines_score_outliers_higher(name: str) -> None:
    model = bl.make_baseline(name).fit(_blobs(40, 0.0, 0))
    normal, odd = model.score(_blobs(10, 0.0, 1)), model.score(_blobs(10, 0.15, 2))
    assert normal.shape == (10,) and np.all(np.isfinite(normal))
    assert odd.min() > normal.max()
    info = model.describe()
    assert 1 <= info["pca_components"] <= 39
    if name == "kde":
        lo, hi, n = info["bandwidth_grid"]
        assert lo <= info["bandwidth"] <= hi and n == 25


def _spread(n: int, d: int, seed: int, widen: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.linspace(1.0, 0.1, d)
    return x * rng.uniform(4.0, 12.0, size=(n, 1)) if widen else x


def test_exact_kde_is_sklearns_gaussian_density_where_sklearn_is_exact() -> None:
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    x, near = _spread(200, 2, 0), _spread(30, 2, 1)  # 2-D, test points among the data: no underflow
    for h in (0.2, 0.7):
        ours = bl.ExactGaussianKDE(h).fit(x).score_samples(near)
        assert np.allclose(ours, KernelDensity(bandwidth=h).fit(x).score_samples(near), rtol=1e-9, atol=1e-9)
    # GridSearchCV clones and scores it as it does KernelDensity: the same bandwidth is chosen
    grid = {"bandwidth": np.logspace(-1.5, 0.5, 9)}
    estimators = (bl.ExactGaussianKDE(), KernelDensity())
    picks = [GridSearchCV(est, grid, cv=4).fit(x).best_params_["bandwidth"] for est in estimators]
    assert picks[0] == picks[1] and grid["bandwidth"][0] < picks[0] < grid["bandwidth"][-1]


def test_exact_kde_far_from_the_data_ranks_by_the_nearest_training_point() -> None:
    """Far from every training point the density is set by the nearest kernel, so -log p must rank
    test points as their nearest-neighbour distance does. (scikit-learn's tree-based KernelDensity
    gets log densities off by hundreds here: issue #7492; measured in docs/reproduction-notes.md §8.)"""
    from scipy.spatial.distance import cdist
    from scipy.stats import spearmanr

    x, far, h = _spread(200, 20, 0), _spread(60, 20, 1, widen=True), 0.3
    logp = bl.ExactGaussianKDE(h).fit(x).score_samples(far)
    d2 = cdist(far, x, "sqeuclidean")
    nearest = d2.min(axis=1)
    assert np.all(np.isfinite(logp)) and (nearest / (2 * h * h) > 745).sum() >= 40  # exp(-d2/2h2) underflows
    assert spearmanr(-logp, nearest)[0] > 0.999
    # the log-sum-exp written out: the nearest kernel plus the others relative to it
    by_hand = (
        -nearest / (2 * h * h)
        + np.log(np.exp(-(d2 - nearest[:, None]) / (2 * h * h)).sum(axis=1))
        - np.log(len(x))
        - 0.5 * x.shape[1] * np.log(2 * np.pi * h * h)
    )
    assert np.allclose(logp, by_hand, rtol=1e-12)


def test_kde_density_choice_is_checked_and_recorded() -> None:
    from piade_lib.engine.config import BaselineSpec

    assert BaselineSpec.build("kde", "digits", 3).params == {"density": "exact"}
    assert BaselineSpec.build("kde", "digits", 3, params={"density": "tree"}).params == {"density": "tree"}
    assert BaselineSpec.build("ocsvm", "digits", 3).params == {}
    with pytest.raises(ValueError, match=r"kde density must be one of \['exact', 'tree'\], got 'fast'"):
        BaselineSpec.build("kde", "digits", 3, params={"density": "fast"})
    with pytest.raises(ValueError, match="kde density must be one of"):
        bl.KDEBaseline(density="fast")
    tree = bl.make_baseline("kde", density="tree", n_bandwidths=3).fit(_blobs(20, 0.0, 0))
    assert tree.describe()["density"] == "tree" and type(tree.kde).__name__ == "KernelDensity"
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        bl.ExactGaussianKDE(0.0).fit(np.zeros((3, 2)))


@pytest.mark.parametrize("size", [32, 120])
def test_autoencoder_shapes(size: int) -> None:
    ae = bl.ConvAutoencoder(size)
    out = ae(torch.rand(2, 3, size, size))
    assert out.shape == (2, 3, size, size) and out.min() >= 0 and out.max() <= 1


def test_autoencoder_training_reduces_its_loss_and_scores_per_image() -> None:
    x = _blobs(8, 0.0, 0)  # 16x16: one downsampling, fast
    for loss in ("l2", "ssim"):
        m = bl.make_baseline(f"cae_{loss}", epochs=2, device="cpu", batch_size=4, lr=1e-3).fit(x)
        assert m.history[-1]["loss"] < m.history[0]["loss"]
        s = m.score(x)
        expected = bl.cae_loss(m.model(x), x, loss).detach().double().numpy()
        assert np.allclose(s, expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown autoencoder loss"):
        bl.CAEBaseline(loss="l1")
    with pytest.raises(KeyError, match="valid baselines"):
        bl.make_baseline("svm")


@pytest.mark.parametrize("name", ["ocsvm", "kde", "cae_l2", "cae_ssim"])
def test_run_baseline_writes_a_run_folder_on_the_task_split(tmp_path: Path, name: str) -> None:
    d = run_baseline(
        name, "digits", "0", tmp_path, epochs=1, params={"batch_size": 16} if "cae" in name else None, **SPLIT
    )
    assert d == tmp_path / "runs" / "digits-lsa" / "0" / f"baseline-{name}"
    for f in (
        "config.json",
        "manifest.json",
        "scores.csv",
        "train_scores.csv",
        "roc.csv",
        "metrics.json",
        "provenance.json",
    ):
        assert (d / f).is_file(), f
    scores = pd.read_csv(d / "scores.csv")
    assert list(scores.columns) == ["id", "label", "total"] and len(scores) == 60
    assert set(scores["label"]) == {0, 1} and np.all(np.isfinite(scores["total"]))
    metrics = json.loads((d / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(metrics) and metrics["term_auc"] == {"total": metrics["auc"]}
    if name in ("ocsvm", "kde"):  # digit 0 against the others is easy for PCA features
        assert metrics["auc"] > 0.8
    manifest = json.loads((d / "manifest.json").read_text())
    assert len(manifest["subset"]["train_positions"]) == 40
    # same split as a PIADE run with the same seed and limits: the same test ids
    cfg = folders.load_config(d)
    assert cfg["kind"] == "baseline" and cfg["protocol"] == "lsa" and cfg["limit_test"] == 60


def test_finished_baseline_is_skipped_and_a_changed_one_refused(tmp_path: Path) -> None:
    d = run_baseline("ocsvm", "digits", "0", tmp_path, **SPLIT)
    mtime = (d / "scores.csv").stat().st_mtime_ns
    assert run_baseline("ocsvm", "digits", "0", tmp_path, **SPLIT) == d
    assert (d / "scores.csv").stat().st_mtime_ns == mtime
    with pytest.raises(folders.RunConfigMismatchError, match="params.nu"):
        run_baseline("ocsvm", "digits", "0", tmp_path, params={"nu": 0.2}, **SPLIT)
    assert (d / "scores.csv").stat().st_mtime_ns == mtime
