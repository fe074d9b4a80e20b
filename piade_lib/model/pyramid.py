"""Pyramidal pooling layer: encoder features -> primary capsules (B, n_caps, capsule_dim).

Each branch is ``AdaptiveAvgPool2d(s)`` -> 1x1 conv (no bias, BN follows) -> BN [-> ReLU]. The branch
outputs (B, C_i, s_i, s_i) are stacked into capsules of ``capsule_dim`` consecutive *channels at one
grid cell* (like Sabour et al.'s primary capsules), branch after branch. For 1x1 branches (the
released code's global pooling) this is exactly the code's ``view(B, -1, 8)``.

``paper``: scales 1, 2, 4, 8 with 64 channels each -> 64 * (1 + 4 + 16 + 64) / 8 = 680 capsules.
``authors_code``: four global branches with 2048, 1024, 512, 256 channels -> 3840 / 8 = 480 capsules.
Adaptive pooling to a size larger than the feature map (e.g. 8x8 from the 2x2 map of a 32x32
input) replicates cells, so such a branch carries no extra information there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from piade_lib.model.capsules import squash


class PyramidPooling(nn.Module):
    """Multi-scale pooling branches whose outputs become primary capsules."""

    def __init__(
        self,
        in_channels: int,
        scales: Sequence[int],
        channels: Sequence[int],
        *,
        bn_momentum: float = 0.1,
        relu: bool = False,
        capsule_dim: int = 8,
        squash_primary: bool = False,
        squash_a: float = 1.0,
    ) -> None:
        super().__init__()
        if len(scales) != len(channels) or not scales:
            raise ValueError(
                f"pyramid scales {list(scales)} and channels {list(channels)} must be non-empty and of the same length"
            )
        for c in channels:
            if c % capsule_dim:
                raise ValueError(
                    f"pyramid branch channels {c} are not a multiple of capsule_dim "
                    f"{capsule_dim}; capsules group {capsule_dim} channels of one cell"
                )
        self.scales = tuple(int(s) for s in scales)
        self.capsule_dim = capsule_dim
        self.squash_primary = squash_primary
        self.squash_a = squash_a
        self.n_caps = sum(c * s * s for c, s in zip(channels, self.scales)) // capsule_dim
        branches = []
        for s, c in zip(self.scales, channels):
            layers: list[nn.Module] = [
                nn.AdaptiveAvgPool2d(s),
                nn.Conv2d(in_channels, c, kernel_size=1, bias=False),
                nn.BatchNorm2d(c, momentum=bn_momentum),
            ]
            if relu:
                layers.append(nn.ReLU(inplace=True))
            branches.append(nn.Sequential(*layers))
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n_caps, capsule_dim)."""
        b = x.shape[0]
        caps = []
        for branch in self.branches:
            y = branch(x)  # (B, C_i, s, s)
            caps.append(y.permute(0, 2, 3, 1).reshape(b, -1, self.capsule_dim))  # 8 channels of one cell
        u = torch.cat(caps, dim=1)
        return squash(u, self.squash_a) if self.squash_primary else u
