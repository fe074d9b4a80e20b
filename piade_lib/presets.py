"""The two readings of PIADE, as presets. One source of truth for every architectural,
loss and optimisation choice; docs/reproduction-notes.md explains each field.

``paper``        the IJNS 2020 paper as written, ambiguities resolved as documented.
``authors_code`` what the authors' released code does (MVTec-only code, generalised to 32x32).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    # --- encoder -------------------------------------------------------------------------
    backbone: str  # torchvision constructor name: "resnet18" | "resnet50"
    keep_maxpool: bool  # paper: dropped (120 -> 8x8 after layer4); code: kept
    se_reduction: int  # SE reduction ratio r (paper 2, code 16)
    encoder_input_normalize: bool  # ImageNet mean/std applied inside the model before the encoder
    # --- pyramid pooling and primary capsules ----------------------------------------------
    pyramid_mode: str  # "multiscale": AdaptiveAvgPool(s) for s in scales; "global": code's 4 global branches
    pyramid_scales: tuple[int, ...]
    pyramid_channels: tuple[int, ...]  # conv out-channels per branch
    pyramid_bn_momentum: float  # PyTorch convention (code's 0.95 is kept literally)
    pyramid_relu: bool  # ReLU after each branch's BN (paper: conv + BN only; code: ReLU)
    capsule_dim: int  # primary capsule dimension (8)
    squash_primary: bool  # squash the primary capsules (Sabour et al. do; paper silent; code: no)
    # --- routing and instantiation vectors --------------------------------------------------
    vector_dim: int  # 64
    routing_iterations: int  # 3
    routing_detach: bool  # detach predictions in all but the last iteration (code: yes)
    squash_a: float  # the constant a of Eq. 3
    decode_vector: str  # "first_train_longest_eval" (paper) | "longest" (code) | "first"
    # --- decoder --------------------------------------------------------------------------
    upsampling_final_relu: bool  # ReLU after the last Linear of the upsampling layer (Table 5: none; code: yes)
    output_activation: str  # "tanh01": (tanh+1)/2 so reconstructions are in [0,1]; "tanh": raw [-1,1]
    init: str  # "orthogonal" (paper, new layers) | "default" (code: PyTorch defaults)
    routing_weight_init: str  # "orthogonal_fanin" (paper: orthogonal, scaled 1/sqrt(n_caps)) | "orthogonal" | "randn0.01" (code)
    # --- losses ---------------------------------------------------------------------------
    lambda_perceptual: float
    lambda_ssim: float
    vgg_input_normalize: bool  # ImageNet mean/std before the frozen VGG11 (paper silent; code: no)
    ssim_data_range: float  # images are compared in [0,1]
    # --- optimisation (Table 1 / released code) ---------------------------------------------
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    # --- preprocessing of 120x120 datasets (MVTec, COIL-100, folders) --------------------------
    resize_crop_ratio: float  # 1.0: resize straight to size; 1.3: Resize(156)+CenterCrop(120) (code)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def with_overrides(self, **overrides: Any) -> "Preset":
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise KeyError(f"unknown preset field(s) {sorted(unknown)}; valid: {sorted(self.__dataclass_fields__)}")
        return replace(self, **overrides)


PAPER = Preset(
    name="paper",
    backbone="resnet18",
    keep_maxpool=False,
    se_reduction=2,
    encoder_input_normalize=True,
    pyramid_mode="multiscale",
    pyramid_scales=(1, 2, 4, 8),
    pyramid_channels=(64, 64, 64, 64),
    pyramid_bn_momentum=0.1,
    pyramid_relu=False,
    capsule_dim=8,
    squash_primary=False,
    vector_dim=64,
    routing_iterations=3,
    routing_detach=False,
    squash_a=1.0,
    decode_vector="first_train_longest_eval",
    upsampling_final_relu=False,
    output_activation="tanh01",
    init="orthogonal",
    routing_weight_init="orthogonal_fanin",
    lambda_perceptual=1.0,
    lambda_ssim=1.0,
    vgg_input_normalize=True,
    ssim_data_range=1.0,
    lr=1e-3,
    weight_decay=1e-4,
    batch_size=120,
    epochs=400,
    resize_crop_ratio=1.0,
)

AUTHORS_CODE = Preset(
    name="authors_code",
    backbone="resnet50",
    keep_maxpool=True,
    se_reduction=16,
    encoder_input_normalize=False,
    pyramid_mode="global",
    pyramid_scales=(1, 1, 1, 1),
    pyramid_channels=(2048, 1024, 512, 256),
    pyramid_bn_momentum=0.95,
    pyramid_relu=True,
    capsule_dim=8,
    squash_primary=False,
    vector_dim=64,
    routing_iterations=3,
    routing_detach=True,
    squash_a=1.0,
    decode_vector="longest",
    upsampling_final_relu=True,
    output_activation="tanh",
    init="default",
    routing_weight_init="randn0.01",
    lambda_perceptual=1.0,
    lambda_ssim=1.0,
    vgg_input_normalize=False,
    ssim_data_range=1.0,
    lr=1e-3,
    weight_decay=1e-3,
    batch_size=60,
    epochs=400,
    resize_crop_ratio=1.3,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, AUTHORS_CODE)}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """Return a preset by name (or pass one through), optionally with field overrides."""
    if isinstance(preset, Preset):
        p = preset
    else:
        try:
            p = PRESETS[preset]
        except KeyError:
            raise KeyError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}") from None
    return p.with_overrides(**overrides) if overrides else p


# ---------------------------------------------------------------------------------------------
# Readings: the choices on which the two presets differ, as named flips
# ---------------------------------------------------------------------------------------------
# Each reading names the preset fields that flip together from one preset's value to the other's
# (coupled fields: the code's four global pyramid branches come with their own scales and channels).
# ``epochs`` is not a reading (profiles set budgets) and ``name`` is not a choice. Optimisation
# fields (weight_decay, batch_size) are RunConfig fields too: a flip sets them there.
READINGS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),
    "keep_maxpool": ("keep_maxpool",),
    "se_reduction": ("se_reduction",),
    "encoder_input_normalize": ("encoder_input_normalize",),
    "pyramid_branches": ("pyramid_mode", "pyramid_scales", "pyramid_channels"),
    "pyramid_bn_momentum": ("pyramid_bn_momentum",),
    "pyramid_relu": ("pyramid_relu",),
    "routing_detach": ("routing_detach",),
    "decode_vector": ("decode_vector",),
    "upsampling_final_relu": ("upsampling_final_relu",),
    "output_activation": ("output_activation",),
    "init": ("init",),
    "routing_weight_init": ("routing_weight_init",),
    "vgg_input_normalize": ("vgg_input_normalize",),
    "weight_decay": ("weight_decay",),
    "batch_size": ("batch_size",),
    "resize_crop_ratio": ("resize_crop_ratio",),
}
# RunConfig fields among the preset fields: a flip of these sets the run's own value
RUN_LEVEL_FIELDS = ("lr", "weight_decay", "batch_size", "epochs")


def other_preset(preset: str) -> str:
    """The other of the two readings ("paper" <-> "authors_code")."""
    names = sorted(PRESETS)
    if preset not in PRESETS or len(names) != 2:
        raise KeyError(f"unknown preset {preset!r}; valid presets: {names}")
    return names[1 - names.index(preset)]


def reading_values(reading: str, preset: str = "paper") -> dict[str, Any]:
    """The fields of ``reading`` with the values of the preset *other* than ``preset``: what a run of
    ``preset`` with that reading flipped uses instead of its own."""
    if reading not in READINGS:
        raise KeyError(f"unknown reading {reading!r}; valid readings: {sorted(READINGS)}")
    other = PRESETS[other_preset(preset)]
    return {f: getattr(other, f) for f in READINGS[reading]}
