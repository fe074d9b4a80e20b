"""The PIADE network: SE-ResNet encoder -> pyramid pooling -> dynamic routing -> upsampling -> decoder.

Use :func:`build_model` (or :func:`model_from_config` to rebuild a checkpoint's architecture).
Inputs are (B, 3, S, S) images in [0, 1], S = 32 or 120; the model applies the ImageNet
normalisation to its encoder input itself when ``preset.encoder_input_normalize``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from piade_lib.model.capsules import DynamicRouting
from piade_lib.model.decoder import (
    DECODERS,
    UpsamplingLayer,
    decoder_input_channels,
    to_decoder_input,
)
from piade_lib.model.pyramid import PyramidPooling
from piade_lib.model.se_resnet import ImageNetNormalize, SEResNetEncoder
from piade_lib.presets import (  # the valid values are declared once, with the preset fields
    DECODE_VECTOR_MODES,
    INITS,
    PRESETS,
    RETIRED_FIELDS,
    Preset,
    get_preset,
)

IMAGE_SIZES = tuple(sorted(DECODERS))  # (32, 120)
UPSAMPLED_CHANNELS = 512  # Table 5: 512 x mf x mf


class PiadeOutput(NamedTuple):
    """What :class:`PIADE` returns (see docs/architecture.md)."""

    reconstruction: torch.Tensor  # (B, 3, S, S)
    vectors: torch.Tensor  # (B, n_vectors, vector_dim), norms in [0, 1)
    lengths: torch.Tensor  # (B, n_vectors)
    selected: torch.Tensor  # (B,) long, index of the decoded vector
    coupling: torch.Tensor  # (B, n_caps, n_vectors), sums to 1 over the last dim


class PIADE(nn.Module):
    """PIADE for square RGB images of ``image_size`` (32 or 120), routing to ``n_vectors`` vectors."""

    def __init__(
        self,
        preset: Preset,
        image_size: int = 120,
        n_vectors: int = 2,
        pretrained: bool = False,
        initialize: bool = True,
    ) -> None:
        super().__init__()
        _validate(preset, image_size, n_vectors)
        self.preset = preset
        self.image_size = image_size
        self.n_vectors = n_vectors
        self.pretrained = bool(pretrained)

        self.normalize = ImageNetNormalize() if preset.encoder_input_normalize else nn.Identity()
        self.encoder = SEResNetEncoder(preset.backbone, preset.keep_maxpool, preset.se_reduction, pretrained)
        self.feature_size = self.encoder.output_size(image_size)  # mf
        self.pyramid = PyramidPooling(
            self.encoder.out_channels,
            preset.pyramid_scales,
            preset.pyramid_channels,
            bn_momentum=preset.pyramid_bn_momentum,
            relu=preset.pyramid_relu,
            capsule_dim=preset.capsule_dim,
            squash_primary=preset.squash_primary,
            squash_a=preset.squash_a,
        )
        self.n_caps = self.pyramid.n_caps
        self.routing = DynamicRouting(
            self.n_caps,
            preset.capsule_dim,
            n_vectors,
            preset.vector_dim,
            iterations=preset.routing_iterations,
            detach=preset.routing_detach,
            squash_a=preset.squash_a,
            weight_init=preset.routing_weight_init,
        )
        self.upsampling = UpsamplingLayer(
            preset.vector_dim, self.feature_size, UPSAMPLED_CHANNELS, final_relu=preset.upsampling_final_relu
        )
        concat_channels = self.encoder.out_channels + UPSAMPLED_CHANNELS
        self.decoder_in_channels = decoder_input_channels(concat_channels, self.feature_size)
        self.decoder = DECODERS[image_size](self.decoder_in_channels, preset.output_activation)
        if initialize and preset.init == "orthogonal":  # skipped when a checkpoint's weights follow
            for part in (self.encoder.se, self.pyramid, self.upsampling, self.decoder):
                orthogonal_init_(part)

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able description from which :func:`model_from_config` rebuilds this architecture."""
        return {
            "preset": self.preset.to_dict(),
            "image_size": self.image_size,
            "n_vectors": self.n_vectors,
            "pretrained": self.pretrained,
            "routing_iterations": self.routing.iterations,
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, 3, image_size, image_size)."""
        expected = f"(B, 3, {self.image_size}, {self.image_size})"
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.image_size or x.shape[3] != self.image_size:
            raise ValueError(
                f"PIADE built for image_size={self.image_size} expects images {expected} in [0, 1]; "
                f"got shape {tuple(x.shape)}"
            )
        if self.training and x.shape[0] < 2:
            raise ValueError(
                "PIADE in training mode needs batches of at least 2 images (BatchNorm1d in the "
                "upsampling layer); drop the last incomplete batch or call model.eval()"
            )

    def select(self, lengths: torch.Tensor) -> torch.Tensor:
        """Index of the vector to decode, per image, following ``preset.decode_vector``."""
        mode = self.preset.decode_vector
        first = torch.zeros(lengths.shape[0], dtype=torch.long, device=lengths.device)
        if mode == "first" or (mode == "first_train_longest_eval" and self.training):
            return first
        return lengths.argmax(dim=1)

    def forward(self, x: torch.Tensor) -> PiadeOutput:
        self.check_input(x)
        features = self.encoder(self.normalize(x))  # (B, C, mf, mf)
        v, c = self.routing(self.pyramid(features))
        lengths = v.norm(dim=-1)
        selected = self.select(lengths)
        chosen = v[torch.arange(v.shape[0], device=v.device), selected]  # (B, vector_dim)
        z = torch.cat([features, self.upsampling(chosen)], dim=1)
        reconstruction = self.decoder(to_decoder_input(z))
        return PiadeOutput(reconstruction, v, lengths, selected, c)


def orthogonal_init_(module: nn.Module) -> None:
    """Orthogonal weights (``nn.init.orthogonal_``) and zero biases for every Linear / (transposed) conv."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _validate(preset: Preset, image_size: int, n_vectors: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {list(IMAGE_SIZES)} (the decoders of Table 6); got {image_size!r}")
    if not isinstance(n_vectors, int) or n_vectors < 1:
        raise ValueError(f"n_vectors must be a positive integer; got {n_vectors!r}")
    if preset.decode_vector not in DECODE_VECTOR_MODES:
        raise ValueError(f"unknown decode_vector {preset.decode_vector!r}; valid: {list(DECODE_VECTOR_MODES)}")
    if preset.init not in INITS:
        raise ValueError(f"unknown init {preset.init!r}; valid: {list(INITS)}")


def build_model(
    preset: str | Preset = "paper",
    image_size: int = 120,
    n_vectors: int = 2,
    pretrained: bool = False,
    routing_iterations: int | None = None,
    **preset_overrides: Any,
) -> PIADE:
    """Build PIADE from a preset name (or :class:`Preset`), with optional preset field overrides.

    ``pretrained=True`` loads ImageNet weights into the ResNet (raises
    :class:`~piade_lib.weights.PretrainedWeightsUnavailable` with instructions when they are missing).
    """
    if routing_iterations is not None:
        preset_overrides["routing_iterations"] = routing_iterations
    return PIADE(
        get_preset(preset, **preset_overrides), image_size=image_size, n_vectors=n_vectors, pretrained=pretrained
    )


def preset_from_dict(d: dict[str, Any]) -> Preset:
    """Inverse of :meth:`Preset.to_dict`; fields missing from ``d`` come from the preset of the same name,
    retired fields (an older run folder's ``pyramid_mode``) are ignored."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k not in RETIRED_FIELDS}
    base = PRESETS.get(fields.get("name", ""))
    if base is not None:
        return base.with_overrides(**fields)
    missing = set(Preset.__dataclass_fields__) - set(fields)
    if missing:
        raise KeyError(f"preset dict of unknown name {fields.get('name')!r} lacks field(s) {sorted(missing)}")
    return Preset(**fields)


def model_from_config(config: dict[str, Any]) -> PIADE:
    """Rebuild the architecture described by ``model.config`` (weights left at PyTorch defaults, not the
    preset's orthogonal init, since a checkpoint's weights are loaded next).

    No ImageNet weights are loaded (the weights come from the checkpoint); ``model.pretrained`` is
    set to the config's value, which records how the checkpointed weights were initialised, so that
    ``model_from_config(cfg).config == cfg``.
    """
    preset = preset_from_dict(config["preset"])
    if config.get("routing_iterations") is not None:
        preset = preset.with_overrides(routing_iterations=int(config["routing_iterations"]))
    model = PIADE(
        preset,
        image_size=int(config["image_size"]),
        n_vectors=int(config["n_vectors"]),
        pretrained=False,
        initialize=False,
    )
    model.pretrained = bool(config.get("pretrained", False))
    return model
