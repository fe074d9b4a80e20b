"""SE block (Eq. 1-2) and the SE-ResNet encoder built on torchvision's ResNet18 / ResNet50.

The paper's "All 5 layers of the Resnet18 has been used preceded by SE block" is read as: the five
stages of torchvision's ResNet (stem ``conv1-bn1-relu[-maxpool]``, ``layer1`` .. ``layer4``) are used,
and each stage's output is recalibrated by an SE block (Fig. 1: SE re-weights the output U of a
transformation F_tr), so an SE block precedes ``layer1`` .. ``layer4`` and the pyramid pooling. This
is also where the released code puts its five SE blocks.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from piade_lib.model.weights import pretrained_state_dict
from piade_lib.presets import BACKBONES  # declared once, in presets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """``(x - mean) / std`` with the ImageNet statistics torchvision's pretrained weights expect."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: ``x * sigmoid(W2 relu(W1 avgpool(x)))`` (Eq. 1-2), W1 reduces by ``r``.

    The two linear maps have no bias, as in Eq. 2 (and in the released code).
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"SE reduction must be in [1, {channels}] for {channels} channels; got {reduction}")
        self.channels = channels
        self.reduction = reduction
        self.fc1 = nn.Linear(channels, channels // reduction, bias=False)  # W1
        self.fc2 = nn.Linear(channels // reduction, channels, bias=False)  # W2

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights s in (0, 1), shape (B, C)."""
        z = x.mean(dim=(2, 3))  # squeeze, Eq. 1
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))  # excitation, Eq. 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x)[:, :, None, None]


class SEResNetEncoder(nn.Module):
    """torchvision ResNet stages (stem, layer1..layer4) each followed by an :class:`SEBlock`.

    ``backbone`` is ``"resnet18"`` or ``"resnet50"``; the ResNet is built with ``weights=None`` and,
    when ``pretrained``, loaded with :func:`piade_lib.weights.pretrained_state_dict` (which raises
    :class:`~piade_lib.weights.PretrainedWeightsUnavailable` with instructions when offline).
    ``keep_maxpool=False`` replaces the stem's max-pool by the identity (paper: 120 -> 512x8x8).
    The classifier head (avgpool, fc) is not used and is removed. The torchvision module is kept as
    ``self.backbone`` so its parameter names match torchvision's state dict.
    """

    def __init__(
        self, backbone: str = "resnet18", keep_maxpool: bool = False, se_reduction: int = 2, pretrained: bool = False
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {list(BACKBONES)}")
        resnet = getattr(torchvision.models, backbone)(weights=None)
        if pretrained:
            resnet.load_state_dict(pretrained_state_dict(backbone))
        self.out_channels: int = resnet.fc.in_features  # 512 (resnet18) or 2048 (resnet50)
        resnet.fc = nn.Identity()
        resnet.avgpool = nn.Identity()
        if not keep_maxpool:
            resnet.maxpool = nn.Identity()
        self.backbone = resnet
        self.keep_maxpool = keep_maxpool
        stage_channels = [resnet.bn1.num_features] + [
            _stage_out(layer) for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        ]
        self.se = nn.ModuleList(SEBlock(c, se_reduction) for c in stage_channels)

    def output_size(self, image_size: int) -> int:
        """Spatial width of the layer4 features for a square input of ``image_size``."""
        size = image_size
        for _ in range(4 + int(self.keep_maxpool)):  # conv1, [maxpool], layer2, layer3, layer4 halve (ceil)
            size = math.ceil(size / 2)
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.backbone
        x = self.se[0](r.maxpool(r.relu(r.bn1(r.conv1(x)))))
        for se, layer in zip(self.se[1:], (r.layer1, r.layer2, r.layer3, r.layer4)):
            x = se(layer(x))
        return x


def _stage_out(layer: nn.Sequential) -> int:
    """Output channels of a torchvision ResNet stage (BasicBlock or Bottleneck)."""
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return last_bn.num_features
