"""The PIADE network of the paper's Figure 2 and its loss, as plain ``torch.nn`` modules.

``se_resnet`` (SE-ResNet encoder) -> ``pyramid`` (pyramid pooling) -> ``capsules`` (dynamic routing) ->
``decoder`` (upsampling decoder); ``network`` assembles them (:class:`PIADE`, :func:`build_model`);
``losses`` is the training loss and anomaly score (MSE + perceptual VGG11 + SSIM); ``weights`` fetches the
ImageNet weights. Nothing here knows about run folders or datasets.
"""

from __future__ import annotations

from piade_lib.model.losses import TERMS, PiadeLoss  # noqa: F401
from piade_lib.model.network import (  # noqa: F401
    PIADE,
    PiadeOutput,
    build_model,
    model_from_config,
    preset_from_dict,
)
