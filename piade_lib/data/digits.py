"""Offline stand-in for Tables 2 and 4: scikit-learn's ``load_digits`` (1,797 handwritten digits, 8x8).

Pixel values 0..16 -> [0, 1]; the transform upsamples 8 -> 32 (bilinear) and repeats to 3 channels.
It is NOT CIFAR-10 or COIL-100: it exercises the same protocols on real images without a download.

* ``lsa`` (stands in for Table 2): a seeded, stratified split of the 1,797 images into a train part
  and a test part (``test_fraction``, default 0.3); train = the normal digit's train-part images,
  test = the whole test part. ``holdout_fraction`` as for CIFAR-10.
* ``gpnd`` (stands in for Table 4): per normal digit a seeded ``floor(train_fraction * n)`` /
  rest split of its images; the test set adds outliers drawn from the other digits so that they make
  up ``outlier_fraction`` of it (the COIL-100 construction).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from piade_lib.data.base import (
    ArraySource,
    Record,
    arrays_sha256,
    check_fraction,
    holdout_split,
    n_outliers,
)

CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
LSA_DEFAULTS: dict[str, Any] = {"test_fraction": 0.3, "holdout_fraction": 0.0}
GPND_DEFAULTS: dict[str, Any] = {"train_fraction": 0.8, "outlier_fraction": 0.5}


@lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray, str]:
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    target = d.target.astype(np.int64)
    return images, target, arrays_sha256(images, target)


def _rid(i: int, label: int) -> Record:
    return Record(f"digits/{i:04d}", label, int(i))


def build(protocol: str, class_index: int, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Records of the ``lsa`` or ``gpnd`` protocol on the digits."""
    images, target, digest = _data()
    idx = np.arange(len(target))
    val = None
    if protocol == "lsa":
        tf = check_fraction("test_fraction", params["test_fraction"], low_open=True)
        tr_idx, te_idx = train_test_split(idx, test_size=tf, stratify=target, random_state=seed, shuffle=True)
        keep, held = holdout_split(tr_idx[target[tr_idx] == class_index].tolist(), params["holdout_fraction"], seed)
        train = [_rid(i, 0) for i in keep]
        val = [_rid(i, 0) for i in held] or None
        test = [_rid(i, int(target[i] != class_index)) for i in sorted(te_idx.tolist())]
        info = {"n_train_part": int(len(tr_idx)), "n_test_part": int(len(te_idx))}
    else:
        frac = check_fraction("train_fraction", params["train_fraction"], low_open=True)
        rng = np.random.default_rng(seed)
        own = idx[target == class_index]
        perm = rng.permutation(len(own))
        n_train = math.floor(frac * len(own))
        train_i, test_i = np.sort(own[perm[:n_train]]), np.sort(own[perm[n_train:]])
        pool = idx[target != class_index]
        n_out = n_outliers(len(test_i), params["outlier_fraction"])
        out_i = np.sort(rng.choice(pool, size=n_out, replace=False))
        train = [_rid(i, 0) for i in train_i.tolist()]
        test = [_rid(i, 0) for i in test_i.tolist()] + [_rid(i, 1) for i in out_i.tolist()]
        info = {"n_class_images": int(len(own)), "n_test_outliers": int(n_out)}
    return {
        "source": ArraySource(torch.from_numpy(images), name="load_digits"),
        "train": train,
        "val": val,
        "test": test,
        "has_masks": False,
        "checksum": {"algorithm": "sha256", "value": digest, "of": "load_digits() images/16 (float32) and targets"},
        "info": {"layout": "sklearn.datasets.load_digits (ships with scikit-learn)", **info},
    }
