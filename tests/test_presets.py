"""Presets check their values when built: typed choices declared once, numbers in range, known fields."""

from __future__ import annotations

import pytest

from piade_lib import presets
from piade_lib.presets import PRESETS, PresetError, get_preset


def test_the_two_presets_are_valid_and_every_field_has_a_check():
    assert set(presets.FIELD_CHECKS) == set(presets.Preset.__dataclass_fields__)
    for p in PRESETS.values():
        assert get_preset(p.name) is p


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"decode_vector": "longst"},
            "preset 'paper': decode_vector='longst' is not one of first_train_longest_eval, longest, first",
        ),
        ({"init": "kaiming"}, "init='kaiming' is not one of orthogonal, default"),
        (
            {"output_activation": "sigmoid"},
            "output_activation='sigmoid' is not one of tanh01, tanh",
        ),
        (
            {"routing_weight_init": "zeros"},
            "routing_weight_init='zeros' is not one of orthogonal_fanin, orthogonal, randn0.01",
        ),
        (
            {"backbone": "resnet34"},
            "backbone='resnet34' is not one of resnet18, resnet50",
        ),
        ({"lr": 0.0}, "lr=0.0 is not a finite number in (0, 3.4e+37]"),
        ({"lr": float("inf")}, "lr=inf is not a finite number in (0, 3.4e+37]"),
        (
            {"lr": 1e38},
            "lr=1e+38 is not a finite number in (0, 3.4e+37]",
        ),  # Adam would overflow float32
        ({"lr": "1e-3"}, "write 1.0e-3"),
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001 is not a finite number >= 0"),
        ({"epochs": 0}, "epochs=0 is not an integer >= 1"),
        ({"batch_size": 1}, "batch_size=1 is not an integer >= 2"),
        ({"lambda_ssim": -1.0}, "lambda_ssim=-1.0 is not a finite number >= 0"),
        (
            {"lambda_perceptual": float("nan")},
            "lambda_perceptual=nan is not a finite number >= 0",
        ),
        ({"se_reduction": 128}, "se_reduction=128 is not an integer in [1, 64]"),
        ({"routing_iterations": 0}, "routing_iterations=0 is not an integer >= 1"),
        ({"squash_a": 0.0}, "squash_a=0.0 is not a finite number > 0"),
        (
            {"pyramid_bn_momentum": 1.5},
            "pyramid_bn_momentum=1.5 is not a finite number in [0, 1]",
        ),
        (
            {"resize_crop_ratio": 0.5},
            "resize_crop_ratio=0.5 is not a finite number >= 1",
        ),
        ({"keep_maxpool": "yes"}, "keep_maxpool='yes' is not true or false"),
        ({"pyramid_scales": [1, 2]}, "must have one entry per pyramid scale"),
        ({"pyramid_channels": [64, 60, 64, 64]}, "must be multiples of capsule_dim=8"),
        (
            {"pyramid_scales": []},
            "pyramid_scales=[] is not a non-empty list of integers >= 1",
        ),
    ],
)
def test_a_bad_value_raises_one_preset_error_naming_field_value_and_valid_values(override, message):
    with pytest.raises(PresetError) as exc:
        get_preset("paper", **override)
    assert message in str(exc.value)
    assert exc.value.field in (
        next(iter(override)),
        "pyramid_channels",
    ) and "\n" not in str(exc.value)


def test_several_bad_values_are_named_together():
    with pytest.raises(PresetError, match=r"lambda_ssim=-1 .*; epochs=0 "):
        get_preset("paper", epochs=0, lambda_ssim=-1)


def test_unknown_fields_are_refused_naming_the_valid_ones():
    with pytest.raises(PresetError) as exc:
        get_preset("paper", se_reductoin=4)
    assert isinstance(exc.value, KeyError)  # as before, for callers that catch KeyError
    msg = str(exc.value)
    assert "unknown preset field(s) ['se_reductoin'] (did you mean se_reduction?)" in msg
    assert "valid fields: name, backbone," in msg
    with pytest.raises(PresetError, match="unknown preset 'papr'; valid presets: authors_code, paper"):
        get_preset("papr")


def test_lists_become_tuples_and_the_dict_round_trips():
    p = get_preset("paper", pyramid_scales=[1, 2, 4, 8])
    assert p.pyramid_scales == (1, 2, 4, 8) and p == PRESETS["paper"]
    assert p.to_dict()["pyramid_scales"] == [1, 2, 4, 8]


def test_pyramid_mode_is_gone_but_older_run_configs_still_load():
    from piade_lib.model.network import preset_from_dict

    assert "pyramid_mode" not in presets.Preset.__dataclass_fields__
    assert all("pyramid_mode" not in fields for fields in presets.READINGS.values())
    stored = {
        **PRESETS["authors_code"].to_dict(),
        "pyramid_mode": "global",
    }  # config.json of an older run
    assert preset_from_dict(stored) == PRESETS["authors_code"]
    assert get_preset("paper", pyramid_mode="global") == PRESETS["paper"]  # preset_overrides of an older run


def test_the_model_uses_the_choices_declared_with_the_presets():
    from piade_lib.model import capsules, decoder, network, se_resnet

    assert network.DECODE_VECTOR_MODES is presets.DECODE_VECTOR_MODES and network.INITS is presets.INITS
    assert decoder.OUTPUT_ACTIVATIONS is presets.OUTPUT_ACTIVATIONS
    assert capsules.ROUTING_WEIGHT_INITS is presets.ROUTING_WEIGHT_INITS
    assert se_resnet.BACKBONES is presets.BACKBONES
    assert presets.CHOICES["decode_vector"] == (
        "first_train_longest_eval",
        "longest",
        "first",
    )
