"""Upsampling layer (Table 5) and the transposed-convolution decoders (Table 6).

Table 5's last row reads "Linear in:128, out:512*mf^2"; the previous layer outputs 512, so the
in-features are 512 (typo in the paper; the released code uses 512).
Decoder input: concat(encoder features, upsampled features) along channels; when that map is not
8x8 it is reshaped (a view, as the released code does for MVTec) to (C*H*W/64, 8, 8).
"""

from __future__ import annotations

import torch
from torch import nn

from piade_lib.presets import OUTPUT_ACTIVATIONS  # declared once, in presets

DECODER_INPUT_SIZE = 8  # both decoders of Table 6 start from an 8x8 map


class Tanh01(nn.Module):
    """``(tanh(x) + 1) / 2``: a Tanh rescaled to [0, 1], the range of the images and the losses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x) + 1.0) / 2.0


def output_activation(name: str) -> nn.Module:
    """The decoder's final activation: ``"tanh01"`` (values in [0, 1]) or ``"tanh"`` (raw, [-1, 1])."""
    if name == "tanh01":
        return Tanh01()
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown output activation {name!r}; valid: {list(OUTPUT_ACTIVATIONS)}")


class UpsamplingLayer(nn.Module):
    """Table 5: Linear 64->128, BN, ReLU, Linear 128->512, BN, ReLU, Linear 512->C*mf^2 [, ReLU].

    Output reshaped to (B, C, mf, mf) with C = 512 and mf the width of the encoder features.
    ``final_relu`` adds the ReLU the released code puts after the last Linear (not in Table 5).
    """

    def __init__(self, vector_dim: int = 64, mf: int = 8, channels: int = 512, final_relu: bool = False) -> None:
        super().__init__()
        self.mf, self.channels = mf, channels
        layers: list[nn.Module] = [
            nn.Linear(vector_dim, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, channels * mf * mf),
        ]
        if final_relu:
            layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, vector_dim) -> (B, channels, mf, mf)."""
        return self.net(v).view(v.shape[0], self.channels, self.mf, self.mf)


def _deconv_stack(specs: list[tuple[int, int, int, int, int]], activation: str) -> nn.Sequential:
    """ConvTranspose2d(in, out, k, s, p) layers with BN + ReLU between them and the output activation last."""
    layers: list[nn.Module] = []
    for n, (cin, cout, k, s, p) in enumerate(specs):
        layers.append(nn.ConvTranspose2d(cin, cout, kernel_size=k, stride=s, padding=p))
        if n < len(specs) - 1:
            layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    layers.append(output_activation(activation))
    return nn.Sequential(*layers)


def _run_stack(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a decoder stack; its last transposed convolution and output activation in float32 even under
    autocast, so that the reconstruction (what the losses and the anomaly score see) is not rounded to
    16 bits. Those two layers are a small part of the decoder's cost (3 output channels)."""
    body, last = net[:-2], net[-2:]
    x = body(x)
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return last(x.float())
    return last(x)


class Decoder120(nn.Module):
    """Table 6, MVTec/COIL-100 column: (B, in_channels, 8, 8) -> (B, 3, 120, 120) via 8->15->29->60->120."""

    def __init__(self, in_channels: int = 1024, activation: str = "tanh01") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.net = _deconv_stack(
            [(in_channels, 16, 3, 2, 1), (16, 32, 3, 2, 1), (32, 32, 4, 2, 0), (32, 3, 4, 2, 1)], activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_stack(self.net, x)


class Decoder32(nn.Module):
    """Table 6, CIFAR-10 column: (B, in_channels, 8, 8) -> (B, 3, 32, 32) via 8->10->14->19->24->28->32."""

    def __init__(self, in_channels: int = 64, activation: str = "tanh01") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.net = _deconv_stack(
            [
                (in_channels, 16, 5, 1, 1),
                (16, 32, 5, 1, 0),
                (32, 32, 6, 1, 0),
                (32, 32, 6, 1, 0),
                (32, 32, 5, 1, 0),
                (32, 3, 5, 1, 0),
            ],
            activation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_stack(self.net, x)


DECODERS: dict[int, type[nn.Module]] = {32: Decoder32, 120: Decoder120}


def decoder_input_channels(channels: int, size: int) -> int:
    """Channels of the 8x8 decoder input made from a (channels, size, size) concat."""
    if size == DECODER_INPUT_SIZE:
        return channels
    total = channels * size * size
    if total % (DECODER_INPUT_SIZE * DECODER_INPUT_SIZE):
        raise ValueError(
            f"the decoder input ({channels}x{size}x{size} = {total} values) cannot be reshaped to "
            f"(C, {DECODER_INPUT_SIZE}, {DECODER_INPUT_SIZE}): {total} is not a multiple of 64"
        )
    return total // (DECODER_INPUT_SIZE * DECODER_INPUT_SIZE)


def to_decoder_input(z: torch.Tensor) -> torch.Tensor:
    """Reshape a concat (B, C, H, W) to (B, C*H*W/64, 8, 8) unless it is already 8x8."""
    b, c, h, w = z.shape
    if h != w:
        raise ValueError(f"decoder input must be square; got {h}x{w}")
    if h == DECODER_INPUT_SIZE:
        return z
    return z.reshape(b, decoder_input_channels(c, h), DECODER_INPUT_SIZE, DECODER_INPUT_SIZE)
