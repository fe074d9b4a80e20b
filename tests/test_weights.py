"""Pretrained weights: loaded from the torchvision cache under $TORCH_HOME, clear error when missing.

No network: the "ImageNet" files are state dicts of randomly initialised torchvision models written
into a temporary $TORCH_HOME under the file names torchvision expects.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model
from piade_lib.model.weights import (
    PretrainedWeightsUnavailable,
    cache_dir,
    weights_file,
)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private $TORCH_HOME; downloads disabled."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PIADE_NO_DOWNLOAD", "1")
    return tmp_path


def test_cache_follows_torch_home_at_call_time(torch_home):
    assert cache_dir() == torch_home / "hub" / "checkpoints"
    assert weights_file("resnet18").parent == torch_home / "hub" / "checkpoints"


def test_build_model_loads_exactly_the_cached_resnet18(torch_home):
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    model = build_model("paper", 32, pretrained=True)
    assert model.pretrained is True and model.config["pretrained"] is True
    loaded = model.encoder.backbone.state_dict()
    used = [k for k in state if not k.startswith("fc.")]  # the classifier head is not part of the encoder
    assert set(loaded) == set(used)
    for k in used:
        assert torch.equal(loaded[k], state[k]), k

    torch.manual_seed(321)
    scratch = build_model("paper", 32, pretrained=False)
    assert scratch.pretrained is False
    assert not torch.equal(scratch.encoder.backbone.conv1.weight, state["conv1.weight"])


def test_loss_loads_the_cached_vgg11(torch_home):
    torch.manual_seed(7)
    features = torchvision.models.vgg11(weights=None).features
    # only the convolutional part of the file is read; the real file also holds the classifier
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    path = weights_file("vgg11")
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    loss_fn = PiadeLoss("paper", pretrained=True)
    assert loss_fn.pretrained is True
    for k, v in loss_fn.vgg.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"]), k
    assert all(not p.requires_grad for p in loss_fn.vgg.parameters())


@pytest.mark.parametrize(
    "arch,make",
    [
        ("resnet18", lambda: build_model("paper", 32, pretrained=True)),
        ("resnet50", lambda: build_model("authors_code", 32, pretrained=True)),
        ("vgg11", lambda: PiadeLoss("paper", pretrained=True)),
    ],
)
def test_missing_weights_raise_a_clear_error(torch_home, arch, make):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        make()
    message = str(info.value)
    assert weights_file(arch).name in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "pretrained=False" in message


_UNPICKLED: list[str] = []


def _record_unpickling() -> dict:
    _UNPICKLED.append("code ran")
    return {}


class _NotAStateDict:
    """Unpickling this runs ``_record_unpickling``: what a tampered weights file could do."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_cached_weights_are_loaded_with_weights_only(torch_home):
    path = weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(_NotAStateDict(), path)
    _UNPICKLED.clear()
    with pytest.raises(PretrainedWeightsUnavailable):
        build_model("paper", 32, pretrained=True)
    assert _UNPICKLED == [], "the cached weights file was unpickled without weights_only=True"
