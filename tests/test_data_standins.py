"""The offline stand-ins: scikit-learn digits (Tables 2 and 4) and scikit-image textures (Table 3, Figure 4)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from piade_lib.data import classes, one_class_task
from piade_lib.data.textures import CLASSES as TEXTURE_CLASSES
from piade_lib.data.textures import DEFECT_TYPES, apply_defect, photo

TARGET = load_digits().target


def _index(item_id: str) -> int:
    return int(item_id.split("/")[1])


@pytest.mark.parametrize("digit", classes("digits"))
def test_digits_lsa_every_class(digit):
    c = int(digit)
    task = one_class_task("digits", digit)
    assert len(task.test) == math.ceil(0.3 * len(TARGET))  # sklearn rounds the test share up
    test_idx = [_index(i) for i in task.test.ids]
    train_idx = [_index(i) for i in task.train.ids]
    assert not set(test_idx) & set(train_idx)
    assert all(TARGET[i] == c for i in train_idx)
    assert task.test.labels == [int(TARGET[i] != c) for i in test_idx]
    # stratified: the normal digit's share of the test part matches its share of the dataset
    assert abs(task.manifest["n_test_normal"] - 0.3 * (TARGET == c).sum()) <= 1
    assert abs(len(task.train) - 0.7 * (TARGET == c).sum()) <= 1
    assert task.manifest["standin"] is True and "STAND-IN for Table 2" in task.manifest["note"]


@pytest.mark.parametrize("digit", classes("digits"))
def test_digits_gpnd_every_class(digit):
    c = int(digit)
    task = one_class_task("digits", digit, protocol="gpnd")
    n_c = int((TARGET == c).sum())
    assert len(task.train) == math.floor(0.8 * n_c)
    n_in = n_c - len(task.train)
    assert task.manifest["n_test_normal"] == n_in and task.manifest["n_test_anomalous"] == n_in
    ids = task.test.ids
    assert [int(TARGET[_index(i)] != c) for i in ids] == task.test.labels
    assert "STAND-IN for Table 4" in task.manifest["note"]


def test_digits_images_and_determinism():
    a = one_class_task("digits", 5, seed=3)
    b = one_class_task("digits", 5, seed=3)
    other = one_class_task("digits", 5, seed=4)
    assert a.manifest == b.manifest and a.manifest["train_ids"] != other.manifest["train_ids"]
    item = a.train[0]
    img = item["image"]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert torch.equal(img[0], img[1])
    raw = load_digits().images[_index(item["id"])] / 16.0
    assert abs(img[0].mean().item() - raw.mean()) < 0.03  # 8 -> 32 bilinear upsampling keeps the mean
    held = one_class_task("digits", 5, holdout_fraction=0.25)
    assert len(held.val) == round(0.25 * len(a.train)) and len(held.train) + len(held.val) == len(a.train)


@pytest.mark.parametrize("category", TEXTURE_CLASSES)
def test_textures_every_category(category):
    task = one_class_task("textures", category)
    assert classes("textures") == list(TEXTURE_CLASSES)
    assert len(task.train) == 40 and len(task.test) == 40 and task.has_masks
    assert task.manifest["n_test_normal"] == 20 and task.manifest["n_test_anomalous"] == 20
    kinds = [i.split("/")[1] for i, lab in zip(task.test.ids, task.test.labels) if lab == 1]
    assert {k: kinds.count(k) for k in DEFECT_TYPES} == {k: 5 for k in DEFECT_TYPES}
    # train crops from the top half, test crops from the bottom half of the photograph (crop 128 of 512)
    rows = lambda ids: [int(re.search(r"_r(\d+)c", i).group(1)) for i in ids]  # noqa: E731
    assert max(rows(task.train.ids)) + 128 <= 256 and min(rows(task.test.ids)) >= 256
    for i in (0, 25, 39):
        item = task.test[i]
        assert item["image"].shape == (3, 120, 120) and item["mask"].shape == (1, 120, 120)
        assert (item["mask"].sum() > 0) == bool(item["label"])
    assert "STAND-IN for Table 3" in task.manifest["note"]


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defects_change_pixels_only_inside_their_mask(kind):
    img = photo("brick")
    others = (photo("grass"), photo("gravel"))
    for seed in range(8):
        rng = np.random.default_rng(seed)
        y, x = rng.integers(256, 384), rng.integers(0, 384)
        clean = np.repeat(img[None, y : y + 128, x : x + 128], 3, axis=0)
        out, mask = apply_defect(clean, kind, rng, others)
        changed = (out != clean).any(axis=0)
        assert mask.any() and changed.any()
        assert not (changed & ~mask).any()
        assert np.abs(out - clean)[:, mask].mean() > 0.05  # visible
        assert out.min() >= 0 and out.max() <= 1
    if kind == "blotch":  # coloured: the channels differ inside the mask
        assert (out[0, mask] != out[2, mask]).any()


def test_textures_task_level_exact_mask_and_seed():
    # crop 120 at image size 120: the transform is the identity, so the check is exact on the served items
    task = one_class_task("textures", "gravel", crop_size=120, n_train=3, n_test_good=2, n_test_defect=8, seed=7)
    src = task.test.source
    for rec, i in zip(task.test.records, range(len(task.test))):
        item = task.test[i]
        changed = (item["image"] != src.clean(rec.key)).any(dim=0)
        assert not (changed & (item["mask"][0] == 0)).any()
        assert changed.any() == bool(rec.label)
    again = one_class_task("textures", "gravel", crop_size=120, n_train=3, n_test_good=2, n_test_defect=8, seed=7)
    other = one_class_task("textures", "gravel", crop_size=120, n_train=3, n_test_good=2, n_test_defect=8, seed=8)
    assert again.manifest == task.manifest
    assert torch.equal(again.test[5]["image"], task.test[5]["image"])
    assert (
        other.manifest["checksum"] != task.manifest["checksum"]
        and other.manifest["test_ids"] != task.manifest["test_ids"]
    )


def test_standins_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIADE_DATA", raising=False)
    one_class_task("digits", 0).train[0]
    one_class_task("textures", "brick", n_train=2, n_test_good=1, n_test_defect=4).test[0]
    assert list(tmp_path.iterdir()) == []


def test_textures_aligned_crops_stay_within_the_jitter():
    """jitter: every crop (train and test) is the photograph's centre shifted by at most jitter pixels."""
    import re

    task = one_class_task("textures", "brick", crop_size=128, n_train=6, n_test_good=3, n_test_defect=4, jitter=5)
    centre = (512 - 128) // 2
    ids = task.manifest["train_ids"] + task.manifest["test_ids"]
    offsets = [tuple(int(v) - centre for v in re.search(r"_r(\d+)c(\d+)$", i).groups()) for i in ids]
    assert len(offsets) == 13 and all(abs(dy) <= 5 and abs(dx) <= 5 for dy, dx in offsets)
    assert len(set(offsets)) > 1  # shifted, not one crop repeated
    assert "aligned" in task.manifest["source"]["layout"] and "5 px" in task.manifest["source"]["layout"]
    with pytest.raises(ValueError, match="jitter"):
        one_class_task("textures", "brick", jitter=100)
