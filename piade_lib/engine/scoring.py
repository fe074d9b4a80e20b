"""Scoring trained models: per-image anomaly scores (``PiadeLoss.per_image``, the function training
minimises, model in eval mode), ``1 - SSIM`` pixel maps, the train-mean image reference, and the
evaluation of a finished run folder (scores.csv, train_scores.csv, roc.csv, metrics.json).

Pixel maps (datasets with masks): ``1 - SSIM`` map between the image and its reconstruction,
Gaussian window 11 / sigma 1.5 (the window of the SSIM loss), reflect padding so the map has the
image size, averaged over the 3 channels. pytorch-msssim only returns SSIM means, so the map is
computed here with the same window and constants.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from piade_lib.engine import checkpoints, cpu_allocator, files, folders
from piade_lib.metrics import (
    roc_curve_data,
)
from piade_lib.model.losses import TERMS, gaussian_window


# --------------------------------------------------------------------------------------------
# pixel maps
# --------------------------------------------------------------------------------------------
def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    win_sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
) -> torch.Tensor:
    """Per-pixel SSIM of two ``(B, C, H, W)`` batches, averaged over channels: ``(B, 1, H, W)``.

    Same Gaussian window and constants as pytorch-msssim, but with reflect padding so the map keeps
    the image size (pytorch-msssim uses a valid convolution and only returns means).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"ssim_map needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    x, y = x.float(), y.float()
    c = x.shape[1]
    win = min(win_size, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd, and padding < size for tiny images
    g = gaussian_window(win, win_sigma, x.device).to(x.dtype)  # the SSIM loss's window
    gh = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    gv = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)
    pad = win // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=1, keepdim=True)


def _ssim_range(model: torch.nn.Module) -> float:
    cfg = getattr(model, "config", None) or {}
    preset = cfg.get("preset") if isinstance(cfg, dict) else None
    if isinstance(preset, dict) and "ssim_data_range" in preset:
        return float(preset["ssim_data_range"])
    return 1.0


def _reconstruct(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.reconstruction if hasattr(out, "reconstruction") else out


@torch.no_grad()
def anomaly_map(model: torch.nn.Module, images: torch.Tensor, data_range: float | None = None) -> torch.Tensor:
    """Pixel anomaly map ``1 - SSIM(image, reconstruction)``, shape ``(B, 1, S, S)``, on the CPU.

    ``images`` are ``(B, 3, S, S)`` in [0, 1] (or one ``(3, S, S)`` image); the model is used in
    eval mode (its previous mode is restored).
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = images.to(device, torch.float32)
        recon = _reconstruct(model, x).float()
        dr = _ssim_range(model) if data_range is None else data_range
        return (1.0 - ssim_map(x, recon, data_range=dr)).cpu()
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
def _loader(dataset: Dataset, batch_size: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=device.type == "cuda")


def _as_list(v: Any, n: int) -> list:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v] * n


@torch.no_grad()
def score_dataset(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    *,
    progress: bool = False,
    with_maps: bool = False,
    desc: str = "scoring",
    reference: torch.Tensor | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """Score every item of ``dataset`` (dict items with ``image``, ``label``, ``id``): a DataFrame
    ``id, label, mse, perceptual, ssim_loss, total`` from ``loss_fn.per_image`` (model in eval mode,
    previous mode restored). With ``reference`` (a ``(3, S, S)`` image, e.g. :func:`mean_image` of
    the train split) a column ``mean_image_mse`` holds each image's MSE to that image: the error of
    a "model" that always predicts it. With ``with_maps`` also returns the ``1 - SSIM`` maps and
    the masks, ``(N, 1, S, S)`` float16 tensors on the CPU."""
    device = torch.device(device)
    cpu_allocator.tune(device)
    was_training = model.training
    model.eval()
    loss_was_training = loss_fn.training
    loss_fn.eval()
    rows: dict[str, list] = {"id": [], "label": [], **{t: [] for t in TERMS}}
    if reference is not None:
        rows["mean_image_mse"] = []
        ref = reference.to(device, torch.float32).unsqueeze(0)
    maps, masks = [], []
    dr = _ssim_range(model)
    try:
        for batch in tqdm(_loader(dataset, batch_size, device), desc=desc, disable=not progress, leave=False):
            x = batch["image"].to(device, torch.float32, non_blocking=True)
            recon = _reconstruct(model, x)
            terms = loss_fn.per_image(recon, x)
            n = x.shape[0]
            rows["id"].extend(str(i) for i in _as_list(batch.get("id", [""] * n), n))
            rows["label"].extend(int(v) for v in _as_list(batch.get("label", 0), n))
            for t in TERMS:
                rows[t].extend(terms[t].detach().float().cpu().tolist())
            if reference is not None:
                rows["mean_image_mse"].extend((x - ref).pow(2).flatten(1).mean(dim=1).cpu().tolist())
            if with_maps:
                maps.append((1.0 - ssim_map(x, recon.float(), data_range=dr)).cpu().half())
                m = batch.get("mask")
                masks.append((m if m is not None else torch.zeros(n, 1, *x.shape[-2:])).cpu().half())
    finally:
        model.train(was_training)
        loss_fn.train(loss_was_training)
    frame = pd.DataFrame(rows)
    if with_maps:
        empty = torch.zeros(0, 1, 1, 1, dtype=torch.float16)
        return frame, (torch.cat(maps) if maps else empty), (torch.cat(masks) if masks else empty)
    return frame


@torch.no_grad()
def mean_image(dataset: Dataset, batch_size: int = 256) -> torch.Tensor:
    """The pixel-wise mean ``(3, S, S)`` of a dataset's images (float32, CPU)."""
    total, n = None, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        x = batch["image"].to(torch.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        n += x.shape[0]
    if total is None:
        raise ValueError("mean_image of an empty dataset")
    return (total / n).float()


def write_results(
    run_dir: str | os.PathLike, scores: pd.DataFrame, metrics: dict[str, Any], train_scores: pd.DataFrame | None = None
) -> None:
    """Write scores.csv, roc.csv, (train_scores.csv) and, last, metrics.json, all atomically."""
    run_dir = Path(run_dir)
    files.write_csv(run_dir / "scores.csv", scores)
    files.write_csv(run_dir / "roc.csv", roc_curve_data(scores["label"], scores["total"]))
    if train_scores is not None:
        files.write_csv(run_dir / "train_scores.csv", train_scores)
    files.write_json(run_dir / "metrics.json", metrics)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> cuda if available, else cpu; otherwise ``torch.device(device)``, checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was asked for but torch sees no CUDA device "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    return dev


def load_final(run_dir: str | os.PathLike, config_hash: str | None = None) -> dict[str, Any]:
    """``checkpoints/final.pt`` of a run (``torch.load(weights_only=True)``), checked against the hash of
    the run's config.json (or ``config_hash``): weights of another configuration are refused."""
    run_dir = Path(run_dir)
    final_path = run_dir / "checkpoints" / checkpoints.FINAL
    if not final_path.is_file():
        raise FileNotFoundError(
            f"{final_path} not found: the run in {run_dir} has not finished training. "
            "Run `piade train` with the same settings (it resumes) before evaluating or scoring."
        )
    expected = config_hash or folders.config_hash(folders.load_config(run_dir))
    try:
        final = checkpoints.load_torch(final_path)
    except checkpoints.CheckpointError as exc:
        raise checkpoints.CheckpointError(
            f"{exc}. The file is damaged: run `piade train` with the run's settings again; it sets the damaged "
            "file aside and writes it again from the run's last epoch checkpoint"
        ) from exc
    if not isinstance(final, dict):
        raise checkpoints.CheckpointError(f"{final_path} holds a {type(final).__name__}, not a run's final weights")
    if final.get("config_hash") != expected:
        raise folders.RunConfigMismatchError(
            f"{final_path} belongs to configuration {final.get('config_hash')}, but {run_dir / 'config.json'} "
            f"is configuration {expected}: the folder mixes two runs. Move it aside and train again."
        )
    return final


def load_trained(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any]]:
    """(model, loss_fn, config) of a finished PIADE run, from ``checkpoints/final.pt`` (checked
    against config.json's hash), in eval mode on ``device``."""
    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import model_from_config, preset_from_dict

    run_dir = Path(run_dir)
    cfg = folders.load_config(run_dir)
    final = load_final(run_dir, folders.config_hash(cfg))
    model = model_from_config(final["model_config"])
    model.load_state_dict(final["model"])
    preset = preset_from_dict(cfg["preset_resolved"])
    loss_fn = PiadeLoss(preset=preset, pretrained=False)
    if final.get("loss"):
        loss_fn.load_state_dict(final["loss"])
    device = torch.device(device)
    return model.to(device).eval(), loss_fn.to(device).eval(), cfg
