"""Baselines under the same one-class protocol as PIADE (same ``one_class_task`` splits).

Shallow (Table 2's OC-SVM and KDE columns; LSA's protocol):
    features = flattened [0, 1] images (optionally area-downsampled to ``feature_size``)
    -> StandardScaler -> PCA keeping 95% of the variance (at most n_train - 1 components), all
    fitted on the normal train images only.
    ``ocsvm``: ``OneClassSVM(kernel="rbf", gamma="scale", nu=0.1)``; nu is the expected share of
    training outliers and is fixed in advance (no test labels are available to tune it).
    Score = -decision_function.
    ``kde``: isotropic Gaussian kernel density; bandwidth chosen by 5-fold cross-validated
    log-likelihood (``GridSearchCV``) on the normal train features, over 25 values spaced
    logarithmically from 0.01 to 3 times the median pairwise distance of the train features.
    Score = -log density. ``density="exact"`` (the default) sums every kernel in log space
    (:class:`ExactGaussianKDE`); ``density="tree"`` is scikit-learn's tree-based ``KernelDensity``,
    whose log densities of points far from all training points can be off by hundreds to thousands
    (scikit-learn issue #7492, open; measured here in docs/reproduction-notes.md §8), which reorders
    exactly the test images an anomaly score must rank. Kept to reproduce results made with it.

Convolutional autoencoders (Table 3's AE-L2 / AE-SSIM columns; Bergmann et al. 2019 style, small):
    strided 4x4 convolutions (LeakyReLU 0.2) down to 8x8 (32x32 input) or 7x7 (120x120), a
    dense bottleneck of ``latent_dim`` (100) channels, mirrored transposed convolutions, sigmoid
    output. Trained on the normal train images with Adam (lr 2e-4, weight decay 1e-5, batch 128)
    on the L2 loss (``cae_l2``) or on 1 - SSIM (``cae_ssim``, pytorch-msssim, window 11).
    Score = per-image mean squared error, or 1 - SSIM. Higher score = more anomalous throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from scipy.spatial.distance import pdist
from scipy.special import logsumexp
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances_chunked
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from piade_lib.engine.scoring import resolve_device

PCA_VARIANCE = 0.95


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def dataset_arrays(ds: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """All items of a task dataset as ``(images (N,3,S,S) float, labels (N,), ids)``."""
    images, labels, ids = [], [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0):
        n = batch["image"].shape[0]
        images.append(batch["image"].float())
        lab = batch.get("label", torch.zeros(n, dtype=torch.long))
        labels.append(torch.as_tensor(lab).view(-1).numpy().astype(int))
        idv = batch.get("id", [""] * n)
        ids.extend(str(i) for i in (idv.tolist() if isinstance(idv, torch.Tensor) else idv))
    if not images:
        raise ValueError("empty dataset")
    return torch.cat(images), np.concatenate(labels), ids


def image_features(images: torch.Tensor, feature_size: int | None = None) -> np.ndarray:
    """Flattened images ``(N, 3*s*s)`` as float64, area-downsampled to ``feature_size`` if given."""
    x = images.float()
    if feature_size is not None and feature_size != x.shape[-1]:
        x = F.interpolate(x, size=(feature_size, feature_size), mode="area")
    return x.reshape(x.shape[0], -1).double().numpy()


def pca_features(train_x: np.ndarray, variance: float = PCA_VARIANCE, seed: int = 0) -> Pipeline:
    """StandardScaler -> PCA fitted on ``train_x``: the fewest components explaining ``variance`` of
    the variance, capped at n_train - 1 (the centred data has rank <= n_train - 1)."""
    n = train_x.shape[0]
    if n < 3:
        raise ValueError(f"need at least 3 training images for the PCA features, got {n}")
    scaled = StandardScaler().fit_transform(train_x)
    full = PCA(svd_solver="full").fit(scaled)
    k = int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), variance) + 1)
    k = max(1, min(k, n - 1, full.n_components_))
    return Pipeline(
        [("scale", StandardScaler()), ("pca", PCA(n_components=k, svd_solver="full", random_state=seed))]
    ).fit(train_x)


# --------------------------------------------------------------------------------------------
# shallow baselines
# --------------------------------------------------------------------------------------------
class Baseline:
    """Common interface: ``fit(train_images) -> self``, ``score(images) -> (N,) array`` (higher =
    more anomalous), ``describe() -> dict`` of the fitted choices (recorded in config/metrics)."""

    name = "baseline"
    uses_epochs = False

    def fit(self, images: torch.Tensor) -> Baseline:  # pragma: no cover - interface
        raise NotImplementedError

    def score(self, images: torch.Tensor) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}


class OCSVMBaseline(Baseline):
    """One-class SVM (RBF, gamma='scale') on PCA features."""

    name = "ocsvm"

    def __init__(
        self, nu: float = 0.1, feature_size: int | None = None, variance: float = PCA_VARIANCE, seed: int = 0
    ) -> None:
        self.nu, self.feature_size, self.variance, self.seed = nu, feature_size, variance, seed
        self.features: Pipeline | None = None
        self.svm: OneClassSVM | None = None

    def fit(self, images: torch.Tensor) -> OCSVMBaseline:
        x = image_features(images, self.feature_size)
        self.features = pca_features(x, self.variance, self.seed)
        self.svm = OneClassSVM(kernel="rbf", gamma="scale", nu=self.nu).fit(self.features.transform(x))
        return self

    def score(self, images: torch.Tensor) -> np.ndarray:
        if self.svm is None or self.features is None:
            raise RuntimeError("call fit() before score()")
        return -self.svm.decision_function(self.features.transform(image_features(images, self.feature_size)))

    def describe(self) -> dict[str, Any]:
        k = int(self.features.named_steps["pca"].n_components_) if self.features is not None else None
        return {
            "nu": self.nu,
            "gamma": "scale",
            "kernel": "rbf",
            "feature_size": self.feature_size,
            "pca_variance": self.variance,
            "pca_components": k,
        }


class ExactGaussianKDE(BaseEstimator):
    """Isotropic Gaussian kernel density, every kernel summed in log space (no tree, no pruning).

    The same model and normalisation as ``KernelDensity(kernel="gaussian")``:
    ``log p(x) = logsumexp_i(-|x - x_i|^2 / 2h^2) - log n - d/2 log(2 pi h^2)``, with the squared
    distances from scipy's ``cdist`` in row chunks (``pairwise_distances_chunked``, bounded memory).
    A scikit-learn estimator (``fit``, ``score_samples``, ``score``), so ``GridSearchCV`` selects
    ``bandwidth`` as it does for ``KernelDensity``."""

    def __init__(self, bandwidth: float = 1.0) -> None:
        self.bandwidth = bandwidth

    def fit(self, X: np.ndarray, y: Any = None) -> ExactGaussianKDE:
        self.X_ = np.asarray(X, dtype=np.float64)
        if self.X_.ndim != 2 or self.X_.shape[0] == 0:
            raise ValueError(f"ExactGaussianKDE needs a non-empty 2-D array, got shape {self.X_.shape}")
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth}")
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log density of each row of ``X``."""
        n, d = self.X_.shape
        h2 = float(self.bandwidth) ** 2
        chunks = pairwise_distances_chunked(np.asarray(X, dtype=np.float64), self.X_, metric="sqeuclidean")
        log_sum = np.concatenate([logsumexp(-d2 / (2.0 * h2), axis=1) for d2 in chunks])
        return log_sum - np.log(n) - 0.5 * d * np.log(2.0 * np.pi * h2)

    def score(self, X: np.ndarray, y: Any = None) -> float:
        """Total log density of ``X`` (what ``GridSearchCV`` maximises)."""
        return float(self.score_samples(X).sum())


KDE_DENSITIES = ("exact", "tree")


def check_kde_density(density: str) -> str:
    """``density`` if it is one of :data:`KDE_DENSITIES`, else a ValueError naming them."""
    if density not in KDE_DENSITIES:
        raise ValueError(f"kde density must be one of {list(KDE_DENSITIES)}, got {density!r}")
    return density


class KDEBaseline(Baseline):
    """Gaussian kernel density on PCA features, bandwidth by cross-validated log-likelihood.
    ``density``: ``"exact"`` (:class:`ExactGaussianKDE`) or ``"tree"`` (scikit-learn's
    ``KernelDensity``, inexact far from the data: see the module docstring)."""

    name = "kde"

    def __init__(
        self,
        feature_size: int | None = None,
        variance: float = PCA_VARIANCE,
        cv: int = 5,
        n_bandwidths: int = 25,
        seed: int = 0,
        density: str = "exact",
    ) -> None:
        self.feature_size, self.variance, self.cv, self.n_bandwidths, self.seed, self.density = (
            feature_size,
            variance,
            cv,
            n_bandwidths,
            seed,
            check_kde_density(density),
        )
        self.features: Pipeline | None = None
        self.kde: ExactGaussianKDE | KernelDensity | None = None
        self.grid: np.ndarray | None = None

    def bandwidth_grid(self, z: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        sub = z[rng.permutation(z.shape[0])[:1000]]
        # condensed pairwise distances: O(n^2) memory, not the O(n^2 * dim) of a broadcast difference
        # (1000 CIFAR/MNIST train features x ~300 PCA components would need several GB)
        med = float(np.median(pdist(sub))) or 1.0
        return med * np.logspace(-2, np.log10(3.0), self.n_bandwidths)

    def fit(self, images: torch.Tensor) -> KDEBaseline:
        x = image_features(images, self.feature_size)
        self.features = pca_features(x, self.variance, self.seed)
        z = self.features.transform(x)
        self.grid = self.bandwidth_grid(z)
        folds = KFold(n_splits=max(2, min(self.cv, z.shape[0])), shuffle=True, random_state=self.seed)
        estimator = ExactGaussianKDE() if self.density == "exact" else KernelDensity(kernel="gaussian")
        search = GridSearchCV(estimator, {"bandwidth": self.grid}, cv=folds)
        search.fit(z)
        self.kde = search.best_estimator_
        return self

    def score(self, images: torch.Tensor) -> np.ndarray:
        if self.kde is None or self.features is None:
            raise RuntimeError("call fit() before score()")
        return -self.kde.score_samples(self.features.transform(image_features(images, self.feature_size)))

    def describe(self) -> dict[str, Any]:
        bw = float(self.kde.bandwidth) if self.kde is not None else None
        grid = self.grid
        return {
            "kernel": "gaussian",
            "density": self.density,
            "bandwidth": bw,
            "cv_folds": self.cv,
            "feature_size": self.feature_size,
            "pca_variance": self.variance,
            "pca_components": int(self.features.named_steps["pca"].n_components_)
            if self.features is not None
            else None,
            "bandwidth_grid": [float(grid[0]), float(grid[-1]), len(grid)] if grid is not None else None,
            "bandwidth_at_grid_edge": bool(grid is not None and bw is not None and bw in (grid[0], grid[-1])),
        }


# --------------------------------------------------------------------------------------------
# convolutional autoencoder
# --------------------------------------------------------------------------------------------
class ConvAutoencoder(nn.Module):
    """Small Bergmann-style convolutional autoencoder for ``(B, 3, S, S)`` images in [0, 1]."""

    def __init__(
        self, image_size: int = 32, latent_dim: int = 100, channels: tuple[int, ...] = (32, 64, 128, 128)
    ) -> None:
        super().__init__()
        sizes = [image_size]
        while sizes[-1] > 8:
            sizes.append((sizes[-1] + 2 - 4) // 2 + 1)  # conv k4 s2 p1
        n_down = len(sizes) - 1
        if n_down > len(channels):
            raise ValueError(f"image_size {image_size} needs {n_down} downsamplings; give that many channels")
        chans = [3, *channels[:n_down]]
        self.sizes = sizes
        enc: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        self.encoder = nn.Sequential(*enc)
        s = sizes[-1]
        self.bottleneck = nn.Conv2d(chans[-1], latent_dim, s)  # dense latent vector (latent_dim, 1, 1)
        self.expand = nn.ConvTranspose2d(latent_dim, chans[-1], s)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(cout, cin if cin != 3 else 32, 4, 2, 1)
            for cin, cout in reversed(list(zip(chans[:-1], chans[1:])))
        )
        self.head = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(self.encoder(x))
        h = F.leaky_relu(self.expand(z), 0.2)
        for layer, size in zip(self.up, reversed(self.sizes[:-1])):
            h = F.leaky_relu(layer(h, output_size=[size, size]), 0.2)
        return torch.sigmoid(self.head(h))


def cae_loss(recon: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image loss: mean squared error (``l2``) or 1 - SSIM (``ssim``), shape ``(B,)``."""
    if kind == "l2":
        return (recon - x).pow(2).flatten(1).mean(1)
    if kind == "ssim":
        return 1.0 - ssim(recon, x, data_range=1.0, size_average=False)
    raise ValueError(f"unknown autoencoder loss {kind!r}; valid: 'l2', 'ssim'")


class CAEBaseline(Baseline):
    """Convolutional autoencoder trained with the L2 or the SSIM loss; scored by the same loss."""

    uses_epochs = True

    def __init__(
        self,
        loss: str = "l2",
        epochs: int = 100,
        batch_size: int = 128,
        lr: float = 2e-4,
        weight_decay: float = 1e-5,
        latent_dim: int = 100,
        seed: int = 0,
        device: str = "auto",
        progress: bool = False,
    ) -> None:
        cae_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), loss)  # validates the name
        self.loss, self.epochs, self.batch_size, self.lr = loss, int(epochs), int(batch_size), float(lr)
        self.weight_decay, self.latent_dim, self.seed = float(weight_decay), int(latent_dim), int(seed)
        self.device = resolve_device(device)
        self.progress = progress
        self.name = f"cae_{loss}"
        self.model: ConvAutoencoder | None = None
        self.history: list[dict[str, float]] = []

    def fit(self, images: torch.Tensor) -> CAEBaseline:
        torch.manual_seed(self.seed)
        self.model = ConvAutoencoder(images.shape[-1], self.latent_dim).to(self.device)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n = images.shape[0]
        drop_last = n > self.batch_size and n % self.batch_size == 1
        loader = DataLoader(
            TensorDataset(images), batch_size=self.batch_size, shuffle=True, generator=gen, drop_last=drop_last
        )
        self.model.train()
        self.history = []
        for epoch in tqdm(range(1, self.epochs + 1), desc=self.name, disable=not self.progress, unit="epoch"):
            t0, total, seen = time.time(), 0.0, 0
            for (x,) in loader:
                x = x.to(self.device)
                loss = cae_loss(self.model(x), x, self.loss).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{self.name}: non-finite loss at epoch {epoch}; lower lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * x.shape[0]
                seen += x.shape[0]
            self.history.append({"epoch": epoch, "loss": total / max(seen, 1), "seconds": round(time.time() - t0, 3)})
        self.model.eval()
        return self

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("call fit() before score()")
        self.model.eval()
        out = []
        for i in range(0, images.shape[0], 256):
            x = images[i : i + 256].to(self.device)
            out.append(cae_loss(self.model(x), x, self.loss).cpu())
        return torch.cat(out).double().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "latent_dim": self.latent_dim,
            "final_train_loss": self.history[-1]["loss"] if self.history else None,
        }


BASELINES: dict[str, Callable[..., Baseline]] = {
    "ocsvm": OCSVMBaseline,
    "kde": KDEBaseline,
    "cae_l2": lambda **kw: CAEBaseline(loss="l2", **kw),
    "cae_ssim": lambda **kw: CAEBaseline(loss="ssim", **kw),
}


def make_baseline(
    name: str, seed: int = 0, epochs: int = 100, device: str = "auto", progress: bool = False, **params: Any
) -> Baseline:
    """Instantiate a baseline by name with its parameters (``epochs``/``device`` only for the CAEs)."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; valid baselines: {sorted(BASELINES)}")
    if name.startswith("cae_"):
        return BASELINES[name](seed=seed, epochs=epochs, device=device, progress=progress, **params)
    return BASELINES[name](seed=seed, **params)
