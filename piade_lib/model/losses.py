"""PIADE's training loss and per-image anomaly score: MSE + lambda_p * perceptual + lambda_s * (1 - SSIM).

* MSE: mean over pixels and channels of (recon - target)^2.
* Perceptual: MSE between the activations of a frozen VGG11 ``features[:4]``
  (conv-ReLU-maxpool-conv) of the two images; ImageNet-normalised input when
  ``preset.vgg_input_normalize``.
* SSIM: ``pytorch_msssim.ssim`` (Gaussian window 11, sigma 1.5, K = (0.01, 0.03)) with
  ``data_range = preset.ssim_data_range``; the loss term is ``1 - SSIM`` (the released code
  minimises ``-SSIM``: same gradient, but 1 - SSIM is non-negative and 0 for a perfect match).

Targets are images in [0, 1] (docs/architecture.md). Reconstructions may use another range (the
``authors_code`` preset's raw Tanh output is in [-1, 1]); the terms are then computed as they come.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from pytorch_msssim import ssim as msssim_ssim
from torch import nn
from torch.autograd.function import once_differentiable

from piade_lib.model.se_resnet import ImageNetNormalize
from piade_lib.model.weights import pretrained_state_dict
from piade_lib.presets import Preset, get_preset

RANGE_TOLERANCE = 1e-4
VGG_LAYERS = 4  # VGG11 features[:4]: conv(3->64), ReLU, max-pool, conv(64->128) (run as conv, max-pool, ReLU, conv)
TERMS = ("mse", "perceptual", "ssim_loss", "total")


def gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian window of ``pytorch_msssim`` (same float32 arithmetic), shape (size,), built
    on ``device``. Built there, not on the CPU and copied: a copy from pageable host memory to a GPU waits
    for every kernel queued before it (``tests/test_step_hot_path.py`` checks the step makes no CPU tensor)."""
    coords = torch.arange(size, dtype=torch.float, device=device)
    coords -= size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    return g


def _band(n: int, window: torch.Tensor) -> torch.Tensor:
    """(n, n - k + 1) matrix M with ``M[j + t, j] = window[t]``: ``x @ M`` is the 'valid' correlation of the
    rows of ``x`` with the window, i.e. what a 1-D convolution with that window (no padding) computes."""
    k = window.numel()
    m = n - k + 1
    # M[i, j] = window[i - j] where 0 <= i - j < k, else 0; built on the window's device in a few kernels (an
    # index_put_ per tap with CPU indices would copy them to a GPU, and each such copy waits for the GPU)
    offset = torch.arange(n, device=window.device).unsqueeze(1) - torch.arange(m, device=window.device)
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, window[offset.clamp(0, k - 1)], window.new_zeros(()))


def ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    win_sigma: float = 1.5,
    k: tuple[float, float] = (0.01, 0.03),
) -> torch.Tensor:
    """SSIM per image, shape (B,): ``pytorch_msssim.ssim(x, y, data_range, size_average=False, win_size,
    win_sigma, K=k)``, reformulated for speed.

    The same quantity (Gaussian window, 'valid' filtering, the same formula and means); the separable
    Gaussian filter is applied as two matrix products with banded matrices, the filtered maps
    (x, y, x², y², xy) stacked into one product per axis, instead of ten depthwise convolutions.
    Equal in exact arithmetic; in float32 the summation order differs (tests/test_losses.py checks
    that the error against a float64 evaluation is that of ``pytorch_msssim`` itself). Images smaller than the
    window go to ``pytorch_msssim`` (which skips the filter along such an axis).
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim expects two (B, C, H, W) tensors of one shape; got {tuple(x.shape)}, {tuple(y.shape)}")
    h, w = x.shape[-2:]
    if h < win_size or w < win_size:
        return msssim_ssim(x, y, data_range=data_range, size_average=False, win_size=win_size, win_sigma=win_sigma, K=k)
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):  # the variances below cancel: never in 16 bits
            return ssim_per_image(x.float(), y.float(), data_range, win_size, win_sigma, k)
    k1, k2 = k
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    window = gaussian_window(win_size, win_sigma, x.device).to(x.dtype)
    band_w = _band(w, window)
    band_h = band_w if h == w else _band(h, window)

    def blur(maps: list[torch.Tensor]) -> torch.Tensor:
        """(n, B, C, H', W') Gaussian-filtered maps, stored transposed: (n, B, C, W', H') as values,
        i.e. f[..., j, i] is the filtered value at row i, column j (the means below do not care)."""
        m = torch.stack(maps)  # (n, B, C, H, W), contiguous
        n, b, c = m.shape[:3]
        f = m.reshape(-1, w) @ band_w  # along W, one matrix product: (n B C H, W')
        f = f.view(n * b * c, h, -1).transpose(1, 2).reshape(-1, h) @ band_h  # along H: (n B C W', H')
        return f.view(n, b, c, w - win_size + 1, h - win_size + 1)

    x = x.contiguous()
    y = y.contiguous()
    if y.requires_grad or not x.requires_grad:
        mu1, mu2, xx, yy, xy = blur([x, y, x * x, y * y, x * y])
    else:  # the target's maps need no gradient: keep them out of the differentiated products
        mu1, xx, xy = blur([x, x * x, x * y])
        mu2, yy = blur([y, y * y])
    mu1_sq = mu1.pow(2)
    mu2_sq = mu2.pow(2)
    mu1_mu2 = mu1 * mu2
    sigma1_sq = xx - mu1_sq
    sigma2_sq = yy - mu2_sq
    sigma12 = xy - mu1_mu2
    cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return torch.flatten(ssim_map, 2).mean(-1).mean(1)


def vgg11_head(pretrained: bool = False) -> nn.Sequential:
    """torchvision VGG11 ``features[:4]``, ImageNet weights when ``pretrained``, frozen (no grad, eval).

    Only the convolutional part is built (``torchvision.models.vgg.make_layers`` with VGG11's
    configuration "A"): the 123M-parameter classifier would cost seconds per loss for nothing.
    Random weights follow ``torchvision.models.VGG``'s own initialisation.
    """
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"])
    if pretrained:  # load the convolutional part strictly, ignore the classifier weights
        state = pretrained_state_dict("vgg11")
        features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    else:
        for m in features.modules():
            if isinstance(m, nn.Conv2d):  # as torchvision.models.VGG.__init__ does
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    conv1, relu, pool, conv2 = features[:VGG_LAYERS]
    # max-pool before the ReLU: relu(maxpool(x)) == maxpool(relu(x)) exactly (both are monotone; the
    # same window maximum is kept, ties broken alike), and the gradient is the same bit for bit, but the
    # ReLU and its backward then touch the pooled map, a quarter of the 64-channel full-resolution one
    # (at 120x120, batch 60: 14 M values instead of 55 M). Positions 0 and 3
    # still hold the two convolutions, so torchvision's state-dict keys (0.*, 3.*) are unchanged.
    head = nn.Sequential(conv1, pool, relu, conv2)
    head.requires_grad_(False)
    return head.eval()


class _MeanSquarePerImage(torch.autograd.Function):
    """``(flat * flat).mean(1)`` with a hand-written backward: ``d * (2 * (g / n))``, one elementwise pass
    where autograd's ``mean`` and ``mul`` backward take three over the whole map (``g / n * d`` twice, then
    their sum). The same float32 values bit for bit (doubling is exact), and the forward is the same
    expression; on the 110 MB VGG feature maps of a 120x120 batch of 60 this saves two passes."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        return (flat * flat).mean(dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        q = grad / flat.shape[1]  # what mean's backward computes per element
        return flat * (2 * q).unsqueeze(1)


def _mean_square_per_image(d: torch.Tensor) -> torch.Tensor:
    """Mean of ``d ** 2`` over all but the first dim, shape (B,). The values of one image are read as one
    flat row without copying in either memory format (a channels_last map is a row per image too, in
    another order), and squared as ``d * d``: with a contiguous ``d`` the same float32 result as
    ``d.pow(2).flatten(1).mean(1)``; the backward is one pass over ``d`` (:class:`_MeanSquarePerImage`)."""
    b = d.shape[0]
    if d.dim() == 4 and not d.is_contiguous() and d.is_contiguous(memory_format=torch.channels_last):
        flat = d.permute(0, 2, 3, 1).reshape(b, -1)  # a view
    else:
        flat = d.reshape(b, -1)
    return _MeanSquarePerImage.apply(flat)


class PiadeLoss(nn.Module):
    """The three reconstruction terms of Sec. 3.2, per image and as a batch mean.

    ``pretrained`` loads ImageNet weights into the VGG11 (raises
    :class:`~piade_lib.weights.PretrainedWeightsUnavailable` with instructions when missing);
    without them the perceptual term uses a randomly initialised, still frozen, VGG11.
    """

    def __init__(
        self, preset: str | Preset = "paper", pretrained: bool = False, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.preset = get_preset(preset)
        self.pretrained = bool(pretrained)
        self.lambda_perceptual = float(self.preset.lambda_perceptual)
        self.lambda_ssim = float(self.preset.lambda_ssim)
        self.data_range = float(self.preset.ssim_data_range)
        self.vgg_normalize = ImageNetNormalize() if self.preset.vgg_input_normalize else nn.Identity()
        self.vgg = vgg11_head(pretrained)
        if device is not None:
            self.to(device)

    def train(self, mode: bool = True) -> PiadeLoss:
        """Switch mode like any module, but keep the frozen VGG in eval mode."""
        super().train(mode)
        self.vgg.eval()
        return self

    @staticmethod
    def check(recon: torch.Tensor, target: torch.Tensor, *, check_range: bool = True) -> None:
        """Raise ValueError unless target is (B, 3, H, W) in [0, 1] and recon has the same shape. The range
        check reads the device (a GPU sync); ``check_range=False`` checks the shapes only."""
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"the losses expect target images (B, 3, H, W) in [0, 1]; got shape {tuple(target.shape)}")
        if recon.shape != target.shape:
            raise ValueError(
                f"reconstruction shape {tuple(recon.shape)} differs from target shape {tuple(target.shape)}"
            )
        if check_range:
            PiadeLoss.check_range(target)

    @staticmethod
    def check_range(images: torch.Tensor) -> None:
        """Raise ValueError unless every value of ``images`` is in [0, 1] (within a rounding tolerance):
        one read of the device, so a trainer checks its whole train split once rather than every batch."""
        lo, hi = float(images.min()), float(images.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"the losses expect target images in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
                "(pass images before any mean/std normalisation)"
            )

    def perceptual(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image MSE between VGG11 ``features[:4]`` activations, shape (B,)."""
        f_recon = self.vgg(self.vgg_normalize(recon))
        with torch.no_grad():
            f_target = self.vgg(self.vgg_normalize(target))
        return _mean_square_per_image(f_recon.float() - f_target.float())  # float32 even under autocast

    def per_image(
        self, recon: torch.Tensor, target: torch.Tensor, *, check_range: bool = True
    ) -> dict[str, torch.Tensor]:
        """Dict of (B,) tensors: ``mse``, ``perceptual``, ``ssim_loss`` (1 - SSIM) and their weighted ``total``.
        ``check_range=False`` skips the [0, 1] check of ``target``, the one device read of the loss (for
        targets already checked, such as a train split checked once): the loss then never syncs a GPU."""
        self.check(recon, target, check_range=check_range)
        mse = _mean_square_per_image(recon - target)
        perceptual = self.perceptual(recon, target)
        ssim_loss = 1.0 - ssim_per_image(recon, target, data_range=self.data_range, win_size=11, win_sigma=1.5)
        total = mse + self.lambda_perceptual * perceptual + self.lambda_ssim * ssim_loss
        return {"mse": mse, "perceptual": perceptual, "ssim_loss": ssim_loss, "total": total}

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss: the batch mean of ``per_image(recon, target)["total"]``."""
        return self.per_image(recon, target)["total"].mean()
