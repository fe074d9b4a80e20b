"""ImageNet weights through torchvision's weights API, with errors that say what to do offline.

torchvision keeps downloaded weights in ``<torch hub dir>/checkpoints/<file name of the URL>``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). When a file is
there it is loaded without network access. When it is not, a download is tried (unless
``PIADE_NO_DOWNLOAD=1``); if that fails, :class:`PretrainedWeightsUnavailable` names the file, the
folder and the two ways forward.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import models

# architecture name -> torchvision weights enum member used by PIADE
WEIGHTS = {
    "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": models.ResNet50_Weights.IMAGENET1K_V1,
    "vgg11": models.VGG11_Weights.IMAGENET1K_V1,
}


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


def _weights_enum(arch: str):
    try:
        return WEIGHTS[arch]
    except KeyError:
        raise KeyError(f"no pretrained weights known for {arch!r}; known: {sorted(WEIGHTS)}") from None


def weights_url(arch: str) -> str:
    return _weights_enum(arch).url


def cache_dir() -> Path:
    """The folder torchvision reads cached weights from (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(arch: str) -> Path:
    """Where torchvision expects the cached weights file of ``arch``."""
    return cache_dir() / os.path.basename(weights_url(arch))


def is_cached(arch: str) -> bool:
    return weights_file(arch).is_file()


def pretrained_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Return the ImageNet state dict of ``arch`` ("resnet18", "resnet50" or "vgg11")."""
    enum = _weights_enum(arch)
    path = weights_file(arch)
    if not path.is_file() and os.environ.get("PIADE_NO_DOWNLOAD", "") not in ("", "0"):
        raise PretrainedWeightsUnavailable(_message(arch, "PIADE_NO_DOWNLOAD is set and the file is not cached"))
    try:
        # weights_only=True: the cached file may have been copied in by hand (see the message below);
        # torch.hub's own default (weights_only=False) would unpickle arbitrary objects from it.
        return enum.get_state_dict(progress=False, check_hash=False, map_location="cpu", weights_only=True)
    except Exception as exc:  # URLError, socket errors, truncated files, ...
        raise PretrainedWeightsUnavailable(_message(arch, f"{type(exc).__name__}: {exc}")) from exc


def _message(arch: str, reason: str) -> str:
    path = weights_file(arch)
    return (
        f"ImageNet weights for {arch} are not available ({reason}).\n"
        f"  expected file : {path.name}\n"
        f"  cache folder  : {path.parent}  (set TORCH_HOME to use another; "
        "torchvision looks in $TORCH_HOME/hub/checkpoints)\n"
        f"  download from : {weights_url(arch)}\n"
        "How to proceed: either place that file in the cache folder (copy it from a machine with network "
        "access), or ask for random initialisation explicitly (pretrained=False, `--no-pretrained`, or "
        "`pretrained: false` in the profile). Every result records whether pretrained weights were used."
    )
