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

import torch
import torchvision
from pytorch_msssim import ssim
from torch import nn

from piade_lib.model.se_resnet import ImageNetNormalize
from piade_lib.model.weights import pretrained_state_dict
from piade_lib.presets import Preset, get_preset

RANGE_TOLERANCE = 1e-4
VGG_LAYERS = 4  # VGG11 features[:4]: conv(3->64), ReLU, max-pool, conv(64->128)
TERMS = ("mse", "perceptual", "ssim_loss", "total")


def vgg11_head(pretrained: bool = False) -> nn.Sequential:
    """torchvision VGG11 ``features[:4]``, ImageNet weights when ``pretrained``, frozen (no grad, eval).

    Only the convolutional part is built (``torchvision.models.vgg.make_layers`` with VGG11's
    configuration "A"): the 123M-parameter classifier would cost seconds per loss for nothing.
    Random weights follow ``torchvision.models.VGG``'s own initialisation.
    """
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"])
    if pretrained:  # load the convolutional part strictly, ignore the classifier weights
        state = pretrained_state_dict("vgg11")
        features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    else:
        for m in features.modules():
            if isinstance(m, nn.Conv2d):  # as torchvision.models.VGG.__init__ does
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    head = features[:VGG_LAYERS]
    head.requires_grad_(False)
    return head.eval()


class PiadeLoss(nn.Module):
    """The three reconstruction terms of Sec. 3.2, per image and as a batch mean.

    ``pretrained`` loads ImageNet weights into the VGG11 (raises
    :class:`~piade_lib.weights.PretrainedWeightsUnavailable` with instructions when missing);
    without them the perceptual term uses a randomly initialised, still frozen, VGG11.
    """

    def __init__(self, preset: str | Preset = "paper", pretrained: bool = False,
                 device: torch.device | str | None = None) -> None:
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

    def train(self, mode: bool = True) -> "PiadeLoss":
        """Switch mode like any module, but keep the frozen VGG in eval mode."""
        super().train(mode)
        self.vgg.eval()
        return self

    @staticmethod
    def check(recon: torch.Tensor, target: torch.Tensor) -> None:
        """Raise ValueError unless target is (B, 3, H, W) in [0, 1] and recon has the same shape."""
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"the losses expect target images (B, 3, H, W) in [0, 1]; got shape {tuple(target.shape)}")
        if recon.shape != target.shape:
            raise ValueError(f"reconstruction shape {tuple(recon.shape)} differs from target shape {tuple(target.shape)}")
        lo, hi = float(target.min()), float(target.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(f"the losses expect target images in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
                             "(pass images before any mean/std normalisation)")

    def perceptual(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image MSE between VGG11 ``features[:4]`` activations, shape (B,)."""
        f_recon = self.vgg(self.vgg_normalize(recon))
        with torch.no_grad():
            f_target = self.vgg(self.vgg_normalize(target))
        return (f_recon - f_target).pow(2).flatten(1).mean(dim=1)

    def per_image(self, recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dict of (B,) tensors: ``mse``, ``perceptual``, ``ssim_loss`` (1 - SSIM) and their weighted ``total``."""
        self.check(recon, target)
        mse = (recon - target).pow(2).flatten(1).mean(dim=1)
        perceptual = self.perceptual(recon, target)
        ssim_loss = 1.0 - ssim(recon, target, data_range=self.data_range, size_average=False,
                               win_size=11, win_sigma=1.5)
        total = mse + self.lambda_perceptual * perceptual + self.lambda_ssim * ssim_loss
        return {"mse": mse, "perceptual": perceptual, "ssim_loss": ssim_loss, "total": total}

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss: the batch mean of ``per_image(recon, target)["total"]``."""
        return self.per_image(recon, target)["total"].mean()
