"""Preprocessing of every dataset, in one place, used identically for training and for scoring.

Images become float tensors ``(3, S, S)`` in [0, 1]; masks become float tensors ``(1, S, S)`` in
{0, 1}. No mean/std normalisation is applied here (the model normalises its own encoder input).

Geometry, per dataset family:

* 32x32 family (cifar10, mnist, fashion_mnist, digits): resize straight to ``S`` (MNIST 28 -> 32,
  digits 8 -> 32, bilinear). The preset's ``resize_crop_ratio`` does not apply: the released code
  has no 32x32 pipeline, and cropping would cut the digit/object.
* 120x120 family (mvtec, coil100, textures, folder): ``Resize((r, r))`` with
  ``r = round(resize_crop_ratio * S)`` then ``CenterCrop(S)``: ratio 1.0 (``paper``) resizes
  straight to S; ratio 1.3 (``authors_code``) is the released code's Resize(156) + CenterCrop(120).
  Non-square images are resized to a square (aspect ratio not kept), as in the released code.

Images are resized bilinearly with antialiasing; masks get the same geometry with nearest
interpolation and are re-binarised (> 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode, v2

from piade_lib.data.errors import (
    CorruptImageError,
    UnknownDatasetError,
    UnsupportedImageSizeError,
)
from piade_lib.presets import Preset, get_preset

SUPPORTED_IMAGE_SIZES: tuple[int, ...] = (32, 120)
SMALL_DATASETS: tuple[str, ...] = ("cifar10", "mnist", "fashion_mnist", "digits")
LARGE_DATASETS: tuple[str, ...] = ("mvtec", "coil100", "textures", "folder")
DEFAULT_IMAGE_SIZE: dict[str, int] = {**{d: 32 for d in SMALL_DATASETS}, **{d: 120 for d in LARGE_DATASETS}}
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def check_image_size(image_size: int) -> int:
    """Return ``image_size`` if the network supports it (32 or 120), else raise."""
    if isinstance(image_size, bool) or int(image_size) != image_size or int(image_size) not in SUPPORTED_IMAGE_SIZES:
        raise UnsupportedImageSizeError(
            f"image_size={image_size!r} is not supported: the PIADE decoders exist for "
            f"{' and '.join(map(str, SUPPORTED_IMAGE_SIZES))} pixels only (32 for CIFAR-10/MNIST/digits, "
            f"120 for MVTec/COIL-100/textures/folders). Pass image_size=32 or image_size=120."
        )
    return int(image_size)


def resolve_image_size(dataset: str, image_size: int | None) -> int:
    """The dataset's default size when ``image_size`` is None, checked either way."""
    if dataset not in DEFAULT_IMAGE_SIZE:
        raise UnknownDatasetError(f"unknown dataset {dataset!r}; valid datasets: {sorted(DEFAULT_IMAGE_SIZE)}")
    return check_image_size(DEFAULT_IMAGE_SIZE[dataset] if image_size is None else image_size)


def _ratio(dataset: str, preset: str | Preset) -> float:
    if dataset not in DEFAULT_IMAGE_SIZE:
        raise UnknownDatasetError(f"unknown dataset {dataset!r}; valid datasets: {sorted(DEFAULT_IMAGE_SIZE)}")
    return 1.0 if dataset in SMALL_DATASETS else float(get_preset(preset).resize_crop_ratio)


def _resize_size(dataset: str, image_size: int, preset: str | Preset) -> int:
    return int(round(_ratio(dataset, preset) * image_size))


class ToFloatImage(torch.nn.Module):
    """PIL image, uint8 or float tensor/array (C,H,W) or (H,W) -> float tensor (C,H,W) in [0,1]."""

    def forward(self, x: Any) -> torch.Tensor:
        if isinstance(x, Image.Image):
            return pil_to_tensor(x)
        t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.dtype == torch.uint8:
            return t.float().div_(255.0)
        return t.float()


class GrayToRGB(torch.nn.Module):
    """Repeat a single channel to three (grayscale -> RGB); drop a 4th (alpha) channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return x.expand(3, *x.shape[1:]).clone()
        if x.shape[0] == 4:
            return x[:3]
        if x.shape[0] != 3:
            raise ValueError(f"expected an image with 1, 3 or 4 channels, got shape {tuple(x.shape)}")
        return x


class Clamp01(torch.nn.Module):
    """Clamp to [0, 1] (guards against interpolation round-off)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(0.0, 1.0)


class BinarizeMask(torch.nn.Module):
    """Mask (PIL / uint8 / float, any channels) -> float tensor (1,H,W) in {0,1} (threshold 0.5 of the max range)."""

    def forward(self, x: Any) -> torch.Tensor:
        t = ToFloatImage()(x)
        if t.shape[0] > 1:
            t = t.amax(dim=0, keepdim=True)
        return (t > 0.5).float()


def image_transform(dataset: str, image_size: int | None = None, preset: str | Preset = "paper") -> v2.Compose:
    """The image preprocessing for ``dataset``: any image -> float tensor (3, S, S) in [0, 1]."""
    size = resolve_image_size(dataset, image_size)
    r = _resize_size(dataset, size, preset)
    return v2.Compose(
        [
            ToFloatImage(),
            GrayToRGB(),
            v2.Resize((r, r), interpolation=InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(size),
            Clamp01(),
        ]
    )


def mask_transform(dataset: str, image_size: int | None = None, preset: str | Preset = "paper") -> v2.Compose:
    """The mask preprocessing matching :func:`image_transform`.

    Same geometry, nearest interpolation -> (1, S, S) {0,1}."""
    size = resolve_image_size(dataset, image_size)
    r = _resize_size(dataset, size, preset)
    return v2.Compose(
        [
            BinarizeMask(),
            v2.Resize((r, r), interpolation=InterpolationMode.NEAREST_EXACT, antialias=False),
            v2.CenterCrop(size),
            BinarizeMask(),
        ]
    )


def preprocessing_summary(
    dataset: str, image_size: int | None = None, preset: str | Preset = "paper"
) -> dict[str, Any]:
    """JSON-able description of the preprocessing (recorded in every manifest)."""
    size = resolve_image_size(dataset, image_size)
    r = _resize_size(dataset, size, preset)
    return {
        "image_size": size,
        "preset": get_preset(preset).name,
        "resize_crop_ratio": _ratio(dataset, preset),
        "resize_to": [r, r],
        "center_crop": [size, size],
        "interpolation": "bilinear, antialias",
        "mask_interpolation": "nearest-exact, binarised > 0.5",
        "grayscale": "repeated to 3 channels",
        "value_range": [0.0, 1.0],
        "mean_std_normalization": "none (the model normalises its encoder input itself)",
    }


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (C,H,W) in [0,1], C = 1 for grayscale modes, else 3 (RGB)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
        return torch.from_numpy(np.clip(arr, 0, 1)).unsqueeze(0)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / 255.0 if arr.max(initial=0) > 1.0 else arr
        return torch.from_numpy(np.clip(arr, 0, 1)).unsqueeze(0)
    img = img.convert("L") if img.mode in ("1", "L", "LA") else img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; a missing or unreadable file raises with its name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(path, f"{type(e).__name__}: {e}") from e


def load_image(path: str | Path) -> torch.Tensor:
    """Image file -> raw float tensor (C,H,W) in [0,1] (before geometry; C = 1 or 3)."""
    return pil_to_tensor(open_image(path))


def load_mask(path: str | Path) -> torch.Tensor:
    """Mask file -> float tensor (1,H,W) in {0,1}: every non-zero pixel is defect.

    Works for MVTec's 0/255 masks, 0/1 label images (8- or 16-bit) and colour masks (as luminance);
    a threshold at half the range would turn a 0/1 mask into an empty one.
    """
    img = open_image(path)
    if img.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        img = img.convert("L")  # RGB(A), palette, LA: luminance (alpha ignored)
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return torch.from_numpy(arr > 0).float().unsqueeze(0)


def load_image_for_scoring(
    path: str | Path, dataset: str = "folder", image_size: int | None = None, preset: str | Preset = "paper"
) -> torch.Tensor:
    """Load a user image preprocessed exactly like the training images of ``dataset`` -> (3, S, S) in [0,1]."""
    return image_transform(dataset, image_size, preset)(load_image(path))
