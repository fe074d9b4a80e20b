"""AUROC with bootstrap intervals, ROC data, SSIM maps, pixel AUROC, scoring and metrics schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_msssim import ssim
from sklearn.metrics import roc_auc_score
from torch import nn

from piade_lib import metrics
from piade_lib.engine import scoring

pytestmark = pytest.mark.usefixtures("single_thread")


def test_perfect_separation_gives_one_with_degenerate_interval() -> None:
    labels = np.r_[np.zeros(30), np.ones(20)]
    scores = np.r_[np.linspace(0, 1, 30), np.linspace(2, 3, 20)]
    res = metrics.auroc_with_ci(labels, scores, n_bootstrap=200)
    assert res == pytest.approx({"auc": 1.0, "low": 1.0, "high": 1.0}, abs=1e-12)  # sklearn's trapezoid round-off
    rev = metrics.auroc_with_ci(labels, -scores, n_bootstrap=200)
    assert rev == pytest.approx({"auc": 0.0, "low": 0.0, "high": 0.0}, abs=1e-12)


def test_random_scores_match_sklearn_and_interval_brackets_auc() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + 0.5 * labels
    res = metrics.auroc_with_ci(labels, scores, n_bootstrap=300, seed=4)
    assert res["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=0)
    assert res["low"] < res["auc"] < res["high"]
    assert metrics.auroc_with_ci(labels, scores, n_bootstrap=300, seed=4) == res  # seeded
    narrow = metrics.auroc_with_ci(labels, scores, n_bootstrap=300, seed=4, level=0.5)
    assert res["low"] < narrow["low"] < narrow["high"] < res["high"]
    assert metrics.auroc_with_ci(labels, scores, n_bootstrap=0)["low"] is None


def test_bootstrap_is_stratified_so_a_single_anomaly_never_breaks_it() -> None:
    # with plain resampling most resamples would lack the one anomaly and roc_auc_score would raise
    labels = np.r_[np.zeros(40), 1]
    scores = np.r_[np.arange(40.0), 20.5]
    res = metrics.auroc_with_ci(labels, scores, n_bootstrap=300)
    assert res["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert 0.0 <= res["low"] <= res["auc"] <= res["high"] <= 1.0


def test_single_class_gives_null_auc_with_a_note() -> None:
    res = metrics.auroc_with_ci(np.zeros(10), np.arange(10.0))
    assert res["auc"] is None and res["low"] is None and "only normal" in res["note"]
    frame = pd.DataFrame({"label": np.zeros(5, int), "total": np.arange(5.0)})
    m = metrics.compute_metrics(frame, n_bootstrap=10)
    assert m["auc"] is None and m["n_anomalous"] == 0 and "undefined" in m["note"]
    assert metrics.roc_curve_data(np.zeros(3), np.arange(3.0)).empty


def test_invalid_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc_with_ci([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auroc_with_ci([0, 1, 1], [0.1, 0.2])


def test_compute_metrics_schema_and_thresholds() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [str(i) for i in range(60)], "label": np.r_[np.zeros(40, int), np.ones(20, int)]})
    for t in metrics.TERMS:
        frame[t] = rng.random(60) + frame["label"]
    train = rng.random(100)
    m = metrics.compute_metrics(frame, n_bootstrap=50, pixel=0.75, train_scores=train)
    for key in metrics.METRICS_KEYS:
        assert key in m
    assert m["ci_level"] == 0.95 and m["n_bootstrap"] == 50 and (m["n_normal"], m["n_anomalous"]) == (40, 20)
    assert set(m["term_auc"]) == set(metrics.TERMS) and m["term_auc"]["total"] == m["auc"]
    assert m["pixel_auroc"] == 0.75
    assert m["thresholds"]["train"] == pytest.approx(np.quantile(train, 0.95))
    assert m["thresholds"]["test_normal"] == pytest.approx(np.quantile(frame["total"][:40], 0.95))


def test_roc_curve_data_matches_auc() -> None:
    labels = np.r_[np.zeros(10), np.ones(10)]
    scores = np.r_[np.arange(10.0), np.arange(5.0, 15.0)]
    roc = metrics.roc_curve_data(labels, scores)
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(labels, scores))


def test_ssim_map_interior_matches_pytorch_msssim() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    m = scoring.ssim_map(x, y)
    assert m.shape == (2, 1, 32, 32)
    ref = ssim(x, y, data_range=1.0, size_average=False)  # valid convolution = interior of our map
    assert torch.allclose(m[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)), ref, atol=1e-5)
    assert torch.allclose(scoring.ssim_map(x, x), torch.ones(2, 1, 32, 32), atol=1e-5)


def test_pixel_auroc_with_and_without_subsampling() -> None:
    masks = torch.zeros(4, 1, 16, 16)
    masks[1, :, 4:8, 4:8] = 1
    maps = masks * 0.8 + 0.1 * torch.rand(4, 1, 16, 16)
    assert metrics.pixel_auroc(maps, masks) == 1.0
    assert metrics.pixel_auroc(maps, masks, max_pixels=300) == 1.0
    assert metrics.pixel_auroc(-maps, masks) == 0.0
    assert metrics.pixel_auroc(maps, torch.zeros_like(masks)) is None


class _HalfModel(nn.Module):
    """A stand-in model: reconstruction = image * w (w learnable), with a BatchNorm to check eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.bn = nn.BatchNorm1d(1)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor):
        self.modes.append(self.training)
        return type("Out", (), {"reconstruction": x * self.w})()


class _SquaredError(nn.Module):
    def per_image(self, recon, target):
        mse = (recon - target).pow(2).flatten(1).mean(1)
        return {"mse": mse, "perceptual": 2 * mse, "ssim_loss": 3 * mse, "total": 6 * mse}


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"image": self.x[i], "label": i % 2, "mask": torch.zeros(1, 8, 8), "id": f"img{i}"}


def test_score_dataset_uses_the_loss_per_image_in_eval_mode() -> None:
    model, loss, ds = _HalfModel(), _SquaredError(), _Items(10)
    model.train()
    frame = scoring.score_dataset(model, loss, ds, batch_size=4, device="cpu")
    assert list(frame.columns) == ["id", "label", *metrics.TERMS]
    assert frame["id"].tolist() == [f"img{i}" for i in range(10)] and frame["label"].tolist() == [0, 1] * 5
    expected = 6 * (ds.x * 0.5 - ds.x).pow(2).flatten(1).mean(1)
    assert np.allclose(frame["total"], expected.numpy(), atol=1e-6)
    assert model.modes == [False] * 3 and model.training  # scored in eval mode, mode restored
    frame2, maps, masks = scoring.score_dataset(model, loss, ds, batch_size=4, device="cpu", with_maps=True)
    assert maps.shape == (10, 1, 8, 8) and masks.shape == (10, 1, 8, 8)
    assert frame2.equals(frame)
