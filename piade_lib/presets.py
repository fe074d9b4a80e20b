"""The two readings of PIADE, as presets. One source of truth for every architectural,
loss and optimisation choice; docs/reproduction-notes.md explains each field.

``paper``        the IJNS 2020 paper as written, ambiguities resolved as documented.
``authors_code`` what the authors' released code does (MVTec-only code, generalised to 32x32).

A :class:`Preset` checks its values when it is built (also through :meth:`Preset.with_overrides`
and :func:`get_preset`): every choice field takes one of the values declared here (the model
code imports these tuples), numbers are range-checked, and anything else raises one
:class:`PresetError` naming the preset, the field, the value and what is valid.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

# ---------------------------------------------------------------------------------------------
# The choices a preset field may take, declared once (the model code imports these tuples)
# ---------------------------------------------------------------------------------------------
Backbone = Literal["resnet18", "resnet50"]  # torchvision constructor names
DecodeVector = Literal["first_train_longest_eval", "longest", "first"]
OutputActivation = Literal["tanh01", "tanh"]  # (tanh+1)/2 in [0,1]; raw tanh in [-1,1]
Init = Literal["orthogonal", "default"]  # new layers: orthogonal (paper) or PyTorch defaults (code)
RoutingWeightInit = Literal["orthogonal_fanin", "orthogonal", "randn0.01"]

BACKBONES: tuple[str, ...] = get_args(Backbone)
DECODE_VECTOR_MODES: tuple[str, ...] = get_args(DecodeVector)
OUTPUT_ACTIVATIONS: tuple[str, ...] = get_args(OutputActivation)
INITS: tuple[str, ...] = get_args(Init)
ROUTING_WEIGHT_INITS: tuple[str, ...] = get_args(RoutingWeightInit)

CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": BACKBONES,
    "decode_vector": DECODE_VECTOR_MODES,
    "output_activation": OUTPUT_ACTIVATIONS,
    "init": INITS,
    "routing_weight_init": ROUTING_WEIGHT_INITS,
}
# Adam's first step is lr / (1 - beta1) = 10 lr, which must be a float32 (largest 3.4028235e38): above this
# the optimiser itself overflows before any loss could be seen to diverge.
LR_MAX = 3.4028234663852886e38 / 10
SEED_MAX = 2**32 - 1  # a run's seed: numpy's and scikit-learn's legacy random states take no larger one
# The SE block after the stem sees the stem's 64 channels (both backbones): it reduces them to 64 / r.
SE_MIN_CHANNELS = 64
# Fields that existed in earlier versions and were never read. Stored configs (config.json of older
# run folders) may still carry them: reading those ignores them; profiles refuse them.
RETIRED_FIELDS: dict[str, str] = {
    "pyramid_mode": "it was never read: the branches are set by pyramid_scales and pyramid_channels alone",
}


class PresetError(ValueError):
    """A preset field has a value outside its valid set or range (the message names the preset, the
    field, the value and the valid values)."""

    def __init__(
        self, message: str, *, preset: str | None = None, field: str | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.preset = preset
        self.field = field
        self.problems = problems or [message]

    def __str__(self) -> str:  # KeyError (UnknownPresetError) would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownPresetError(PresetError, KeyError):
    """A preset name, preset field or reading that does not exist (also a KeyError, as it used to be)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def _yaml_hint(v: Any) -> str:
    """A hint for numbers YAML 1.1 reads as text (``1e-3`` without a dot)."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return ""
        return " (YAML reads a number such as 1e-3 as text: write 1.0e-3)"
    return ""


def _number_check(
    lo: float | None, lo_open: bool, hi: float | None = None, hi_open: bool = False, integer: bool = False
):
    """A checker of a number in a range; returns the problem or None."""
    kind = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        rng = f"in {'(' if lo_open else '['}{lo:g}, {hi:.3g}{')' if hi_open else ']'}"
    elif lo is not None:
        rng = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        rng = ""
    want = f"{kind} {rng}".strip()

    def check(v: Any) -> str | None:
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else (_is_number(v) and math.isfinite(v))
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        return None if ok else f"is not {want}{_yaml_hint(v)}"

    return check


def _bool_check(v: Any) -> str | None:
    return None if isinstance(v, bool) else "is not true or false"


def _choice_check(valid: tuple[str, ...]):
    def check(v: Any) -> str | None:
        return None if v in valid and isinstance(v, str) else f"is not one of {', '.join(valid)}"

    return check


def _int_tuple_check(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
        return None
    return "is not a non-empty list of integers >= 1"


# One check per field: the value's problem, or None. Every field of Preset has one.
FIELD_CHECKS: dict[str, Any] = {
    "name": lambda v: None if isinstance(v, str) and v.strip() else "is not a non-empty name",
    "backbone": _choice_check(BACKBONES),
    "keep_maxpool": _bool_check,
    "se_reduction": _number_check(1, False, SE_MIN_CHANNELS, False, integer=True),
    "encoder_input_normalize": _bool_check,
    "pyramid_scales": _int_tuple_check,
    "pyramid_channels": _int_tuple_check,
    "pyramid_bn_momentum": _number_check(0, False, 1, False),
    "pyramid_relu": _bool_check,
    "capsule_dim": _number_check(1, False, integer=True),
    "squash_primary": _bool_check,
    "vector_dim": _number_check(1, False, integer=True),
    "routing_iterations": _number_check(1, False, integer=True),
    "routing_detach": _bool_check,
    "squash_a": _number_check(0, True),
    "decode_vector": _choice_check(DECODE_VECTOR_MODES),
    "upsampling_final_relu": _bool_check,
    "output_activation": _choice_check(OUTPUT_ACTIVATIONS),
    "init": _choice_check(INITS),
    "routing_weight_init": _choice_check(ROUTING_WEIGHT_INITS),
    "lambda_perceptual": _number_check(0, False),
    "lambda_ssim": _number_check(0, False),
    "vgg_input_normalize": _bool_check,
    "ssim_data_range": _number_check(0, True),
    "lr": _number_check(0, True, LR_MAX, False),
    "weight_decay": _number_check(0, False),
    "batch_size": _number_check(2, False, integer=True),  # BatchNorm needs 2 images per batch
    "epochs": _number_check(1, False, integer=True),
    "resize_crop_ratio": _number_check(1, False),  # Resize(ratio * size) then CenterCrop(size)
}


def field_problem(name: str, value: Any) -> str | None:
    """``"<name>=<value> is not ..."`` when ``value`` is not valid for the preset field ``name``
    (also used for the run-level fields lr, weight_decay, batch_size, epochs); None when it is."""
    problem = FIELD_CHECKS[name](value)
    return None if problem is None else f"{name}={_fmt(value)} {problem}"


@dataclass(frozen=True)
class Preset:
    name: str
    # --- encoder -------------------------------------------------------------------------
    backbone: Backbone  # torchvision constructor name: "resnet18" | "resnet50"
    keep_maxpool: bool  # paper: dropped (120 -> 8x8 after layer4); code: kept
    se_reduction: int  # SE reduction ratio r (paper 2, code 16), 1..64
    encoder_input_normalize: bool  # ImageNet mean/std applied inside the model before the encoder
    # --- pyramid pooling and primary capsules ----------------------------------------------
    pyramid_scales: tuple[int, ...]  # AdaptiveAvgPool2d(s) per branch (paper 1, 2, 4, 8; code: 1, 1, 1, 1)
    pyramid_channels: tuple[int, ...]  # conv out-channels per branch, multiples of capsule_dim
    pyramid_bn_momentum: float  # PyTorch convention (code's 0.95 is kept literally), in [0, 1]
    pyramid_relu: bool  # ReLU after each branch's BN (paper: conv + BN only; code: ReLU)
    capsule_dim: int  # primary capsule dimension (8)
    squash_primary: bool  # squash the primary capsules (Sabour et al. do; paper silent; code: no)
    # --- routing and instantiation vectors --------------------------------------------------
    vector_dim: int  # 64
    routing_iterations: int  # 3
    routing_detach: bool  # detach predictions in all but the last iteration (code: yes)
    squash_a: float  # the constant a of Eq. 3, > 0
    decode_vector: DecodeVector  # "first_train_longest_eval" (paper) | "longest" (code) | "first"
    # --- decoder --------------------------------------------------------------------------
    upsampling_final_relu: bool  # ReLU after the last Linear of the upsampling layer (Table 5: none; code: yes)
    output_activation: OutputActivation  # "tanh01": (tanh+1)/2 so reconstructions are in [0,1]; "tanh": raw [-1,1]
    init: Init  # "orthogonal" (paper, new layers) | "default" (code: PyTorch defaults)
    # "orthogonal_fanin" (paper: orthogonal, scaled 1/sqrt(n_caps)) | "orthogonal" | "randn0.01" (code)
    routing_weight_init: RoutingWeightInit
    # --- losses ---------------------------------------------------------------------------
    lambda_perceptual: float  # >= 0
    lambda_ssim: float  # >= 0
    vgg_input_normalize: bool  # ImageNet mean/std before the frozen VGG11 (paper silent; code: no)
    ssim_data_range: float  # images are compared in [0,1]
    # --- optimisation (Table 1 / released code) ---------------------------------------------
    lr: float  # > 0
    weight_decay: float  # >= 0
    batch_size: int  # >= 2
    epochs: int  # >= 1
    # --- preprocessing of 120x120 datasets (MVTec, COIL-100, folders) --------------------------
    resize_crop_ratio: float  # 1.0: resize straight to size; 1.3: Resize(156)+CenterCrop(120) (code); >= 1

    def __post_init__(self) -> None:
        for f in ("pyramid_scales", "pyramid_channels"):  # YAML / JSON give lists
            v = getattr(self, f)
            if isinstance(v, list):
                object.__setattr__(self, f, tuple(v))
        problems = [p for f in fields(self) if (p := field_problem(f.name, getattr(self, f.name))) is not None]
        scales, channels, dim = self.pyramid_scales, self.pyramid_channels, self.capsule_dim
        if not any(p.startswith(("pyramid_scales=", "pyramid_channels=", "capsule_dim=")) for p in problems):
            if len(channels) != len(scales):
                problems.append(
                    f"pyramid_channels={_fmt(channels)} must have one entry per pyramid scale "
                    f"(pyramid_scales={_fmt(scales)}: {len(scales)})"
                )
            elif any(c % dim for c in channels):
                problems.append(
                    f"pyramid_channels={_fmt(channels)} must be multiples of capsule_dim={dim} "
                    "(a capsule groups capsule_dim channels of one cell)"
                )
        if problems:
            name = self.name if isinstance(self.name, str) else "?"
            first = problems[0].split("=", 1)[0]
            raise PresetError(f"preset {name!r}: " + "; ".join(problems), preset=name, field=first, problems=problems)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with some fields replaced, checked like any preset. Unknown fields are refused
        (naming the valid ones); retired fields (:data:`RETIRED_FIELDS`) are ignored, so that the
        config.json of older run folders still loads."""
        overrides = {k: v for k, v in overrides.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(overrides) - set(self.__dataclass_fields__))
        if unknown:
            body = unknown_fields_message(unknown)
            raise UnknownPresetError(
                f"preset {self.name!r}: {body}", preset=self.name, field=unknown[0], problems=[body]
            )
        return replace(self, **overrides)


def unknown_fields_message(unknown: list[str]) -> str:
    """ "unknown preset field(s) [...] (did you mean ...?); valid fields: ..." for override keys."""
    valid = list(Preset.__dataclass_fields__)
    guesses = [g for u in unknown if u not in RETIRED_FIELDS for g in difflib.get_close_matches(u, valid, n=1)]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    why = "".join(f" ({u} was removed, {RETIRED_FIELDS[u]}: drop it)" for u in unknown if u in RETIRED_FIELDS)
    return f"unknown preset field(s) {unknown}{hint}{why}; valid fields: {', '.join(valid)}"


PAPER = Preset(
    name="paper",
    backbone="resnet18",
    keep_maxpool=False,
    se_reduction=2,
    encoder_input_normalize=True,
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
            raise UnknownPresetError(
                f"unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}", preset=str(preset)
            ) from None
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
    "pyramid_branches": ("pyramid_scales", "pyramid_channels"),
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
        raise UnknownPresetError(f"unknown preset {preset!r}; valid presets: {', '.join(names)}", preset=str(preset))
    return names[1 - names.index(preset)]


def reading_values(reading: str, preset: str = "paper") -> dict[str, Any]:
    """The fields of ``reading`` with the values of the preset *other* than ``preset``: what a run of
    ``preset`` with that reading flipped uses instead of its own."""
    if reading not in READINGS:
        raise UnknownPresetError(f"unknown reading {reading!r}; valid readings: {', '.join(sorted(READINGS))}")
    other = PRESETS[other_preset(preset)]
    return {f: getattr(other, f) for f in READINGS[reading]}
