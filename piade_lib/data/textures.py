"""Offline stand-in for Table 3 and Figure 4: MVTec-style categories made from scikit-image textures.

Categories ``brick``, ``grass``, ``gravel`` (``skimage.data``, 512x512 grayscale photographs,
repeated to RGB). Normal images are seeded random ``crop_size`` crops (resized to the image size by
the usual transform). Training crops come from the top half of the photograph and test crops from
the bottom half, so no test image overlaps a training image. Anomalous test crops carry one
seeded synthetic defect with its pixel mask; a defect changes pixels only inside its mask:

* ``patch``   a rectangle pasted from another texture photograph
* ``scratch`` a thin dark or bright line
* ``hole``    a dark ellipse
* ``blotch``  an ellipse with reduced contrast and a colour tint (visible in colour: the source is grey)

With ``jitter`` set (an integer number of pixels), every crop is instead taken at one place, the
centre of the photograph, shifted by at most ``jitter`` pixels in each direction: an *aligned*
category, as MVTec AD's objects are photographed in one position, whose normal images differ by
small shifts only (train and test crops then overlap the same region). Without it (the default)
the crops are random and the category is a stationary texture, as MVTec's texture categories are.

It is NOT MVTec AD: it exercises the MVTec protocol (train on normals, image- and pixel-level test)
on real texture photographs without a download.
"""

from __future__ import annotations

import colorsys
from functools import cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from skimage import data as skdata
from skimage.draw import ellipse

from piade_lib.data.base import ArraySource, Record, arrays_sha256, bad_param, check_int

CLASSES: tuple[str, ...] = ("brick", "grass", "gravel")
DEFECT_TYPES: tuple[str, ...] = ("blotch", "hole", "patch", "scratch")
DEFAULTS: dict[str, Any] = {
    "crop_size": 128,
    "n_train": 40,
    "n_test_good": 20,
    "n_test_defect": 20,
    "defect_types": DEFECT_TYPES,
    "jitter": None,  # None: random crops (a texture); an int: aligned crops shifted by at most this many pixels
}
# each count of crops is bounded: every crop is cut in Python and held in memory (20,000 crops of 256x256
# are 3.9 GB), so a count in the millions would exhaust the memory instead of giving a stand-in
MAX_CROPS = 20_000


@cache
def photo(name: str) -> np.ndarray:
    """The grayscale photograph of a category as float32 (H, W) in [0, 1] (bundled with scikit-image)."""
    return getattr(skdata, name)().astype(np.float32) / 255.0


def random_crop(
    img: np.ndarray, rng: np.random.Generator, h: int, w: int, rows: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """A seeded ``h x w`` crop whose rows lie in ``[rows[0], rows[1])``; returns (crop, top, left)."""
    y = int(rng.integers(rows[0], rows[1] - h + 1))
    x = int(rng.integers(0, img.shape[1] - w + 1))
    return img[y : y + h, x : x + w], y, x


def aligned_crop(img: np.ndarray, rng: np.random.Generator, size: int, jitter: int) -> tuple[np.ndarray, int, int]:
    """A ``size x size`` crop at the centre of ``img`` shifted by a seeded offset in ``[-jitter, jitter]``."""
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    y = y0 + int(rng.integers(-jitter, jitter + 1))
    x = x0 + int(rng.integers(-jitter, jitter + 1))
    return img[y : y + size, x : x + size], y, x


def _ellipse_mask(rng: np.random.Generator, size: int, r_lo: float, r_hi: float) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    rr, cc = ellipse(
        rng.uniform(0.25, 0.75) * size,
        rng.uniform(0.25, 0.75) * size,
        rng.uniform(r_lo, r_hi) * size,
        rng.uniform(r_lo, r_hi) * size,
        shape=mask.shape,
        rotation=rng.uniform(-np.pi, np.pi),
    )
    mask[rr, cc] = True
    return mask


def apply_defect(
    clean: np.ndarray, kind: str, rng: np.random.Generator, others: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Add one defect to ``clean`` (3, S, S) in [0,1]; returns (image, mask (S, S) bool).

    Pixels outside the mask are untouched."""
    size = clean.shape[-1]
    new = clean.copy()
    if kind == "patch":
        h, w = (int(rng.uniform(0.2, 0.4) * size) for _ in range(2))
        src = others[int(rng.integers(len(others)))]
        patch, _, _ = random_crop(src, rng, h, w, (src.shape[0] // 2, src.shape[0]))
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + h, x : x + w] = True
        new[:, y : y + h, x : x + w] = patch[None]
    elif kind == "scratch":
        canvas = Image.new("L", (size, size), 0)
        length = rng.uniform(0.4, 0.8) * size
        angle = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(0.1, 0.9, size=2) * size
        y1, x1 = y0 + length * np.sin(angle), x0 + length * np.cos(angle)
        width = int(rng.integers(1, max(2, size // 40) + 1))
        ImageDraw.Draw(canvas).line([(x0, y0), (x1, y1)], fill=255, width=width)
        mask = np.asarray(canvas) > 0
        value = rng.uniform(0.0, 0.08) if rng.random() < 0.5 else rng.uniform(0.92, 1.0)
        new[:, mask] = value
    elif kind == "hole":
        mask = _ellipse_mask(rng, size, 0.08, 0.18)
        new[:, mask] = rng.uniform(0.0, 0.06) + rng.uniform(0.0, 0.03, size=int(mask.sum()))[None]
    elif kind == "blotch":
        mask = _ellipse_mask(rng, size, 0.15, 0.3)
        tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.6, 0.9), 1.0), dtype=np.float32)
        region = clean[:, mask]
        new[:, mask] = np.clip(0.35 + 0.5 * region, 0, 1) * tint[:, None]
    else:
        raise ValueError(f"unknown defect type {kind!r}; valid: {DEFECT_TYPES}")
    out = clean.copy()
    out[:, mask] = new[:, mask]  # enforce: nothing changes outside the mask
    return out.astype(np.float32), mask


class TextureSource(ArraySource):
    """Generated crops and masks; ``clean(i)`` returns an anomalous item's crop before its defect."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, clean: dict[int, torch.Tensor]) -> None:
        super().__init__(images, masks, name="textures")
        self._clean = clean

    def clean(self, key: int) -> torch.Tensor:
        return self._clean.get(key, self.images[key])


def _check(params: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    crop = check_int(
        "crop_size", params["crop_size"], 16, 256, "crops come from one half of a 512x512 photograph", example=128
    )
    for k in ("n_train", "n_test_good", "n_test_defect"):
        check_int(k, params[k], 1 if k == "n_train" else 0, MAX_CROPS, "crops, each held in memory")
    jitter = params.get("jitter")
    if jitter is not None:
        check_int("jitter", jitter, 0, 64, "pixels; None or null for random crops", example=24)
    kinds = params["defect_types"]
    if (
        not isinstance(kinds, (list, tuple))
        or not kinds
        or any(not isinstance(k, str) or k not in DEFECT_TYPES for k in kinds)
    ):
        raise bad_param(
            "defect_types",
            kinds,
            f"a list of one or more of {list(DEFECT_TYPES)}",
            ["blotch", "hole"],
            cli='--param \'defect_types=["blotch", "hole"]\'',
        )
    return crop, tuple(kinds)


def build(class_index: int, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Generate the normal and defective crops of one category."""
    crop, kinds = _check(params)
    name = CLASSES[class_index]
    img = photo(name)
    others = tuple(photo(c) for c in CLASSES if c != name)
    half = img.shape[0] // 2
    rng = np.random.default_rng([int(seed), class_index])
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    clean: dict[int, torch.Tensor] = {}
    train: list[Record] = []
    test: list[Record] = []

    jitter = params.get("jitter")

    def crop_at(rows: tuple[int, int]) -> tuple[np.ndarray, int, int]:
        if jitter is None:
            return random_crop(img, rng, crop, crop, rows)
        return aligned_crop(img, rng, crop, int(jitter))

    def add(arr: np.ndarray, mask: np.ndarray | None) -> int:
        images.append(np.repeat(arr[None], 3, axis=0) if arr.ndim == 2 else arr)
        masks.append(np.zeros(arr.shape[-2:], bool) if mask is None else mask)
        return len(images) - 1

    for k in range(int(params["n_train"])):
        c, y, x = crop_at((0, half))
        train.append(Record(f"train/{k:03d}_r{y}c{x}", 0, add(c, None)))
    for k in range(int(params["n_test_good"])):
        c, y, x = crop_at((half, img.shape[0]))
        test.append(Record(f"test/good/{k:03d}_r{y}c{x}", 0, add(c, None)))
    counts = {kind: 0 for kind in kinds}
    for j in range(int(params["n_test_defect"])):
        kind = kinds[j % len(kinds)]
        c, y, x = crop_at((half, img.shape[0]))
        c3 = np.repeat(c[None], 3, axis=0)
        defected, mask = apply_defect(c3, kind, rng, others)
        i = add(defected, mask)
        clean[i] = torch.from_numpy(c3.copy())
        test.append(Record(f"test/{kind}/{counts[kind]:03d}_r{y}c{x}", 1, i))
        counts[kind] += 1
    im_t = torch.from_numpy(np.stack(images).astype(np.float32))
    mk_t = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    return {
        "source": TextureSource(im_t, mk_t, clean),
        "train": train,
        "val": None,
        "test": test,
        "has_masks": True,
        "checksum": {
            "algorithm": "sha256",
            "value": arrays_sha256(im_t, mk_t),
            "of": "the generated crops and masks (float32, before resizing)",
        },
        "info": {
            "layout": (
                f"skimage.data.{name}() (ships with scikit-image), train rows [0, {half}), test rows "
                f"[{half}, {img.shape[0]})"
            )
            if jitter is None
            else (
                f"skimage.data.{name}() (ships with scikit-image), aligned: {crop}x{crop} crops at the "
                f"centre shifted by at most {int(jitter)} px (train and test)"
            ),
            "defect_counts": counts,
        },
    }
