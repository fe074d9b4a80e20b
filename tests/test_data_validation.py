"""validate_split: every item of a split decoded once and checked, all failures in one error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import DictItems, patch_idx_official, write_mnist, write_mvtec_category
from PIL import Image
from torch.utils.data import Subset

from piade_lib.data import InvalidSplitError, ItemFailure, SplitCheck, one_class_task, validate_split
from piade_lib.data.validation import check_item, validate_task


@pytest.fixture
def bottle(tmp_path):
    """An MVTec-layout category: 4 train, 3 good and 4 defective test images (40x40) with masks."""
    write_mvtec_category(tmp_path / "mvtec_anomaly_detection" / "bottle")
    return tmp_path, tmp_path / "mvtec_anomaly_detection" / "bottle"


def test_clean_splits_pass_and_fill_the_cache_without_copies(bottle):
    root, _ = bottle
    task = one_class_task("mvtec", "bottle", root=root)
    assert not task.test._cache
    check = validate_split(task.test, "test")
    assert isinstance(check, SplitCheck)
    assert (check.split, check.n_items, check.n_anomalous, check.n_masks) == ("test", 7, 4, 4)
    assert sorted(task.test._cache) == list(range(7))  # decoded once, as the first epoch would
    image, _ = task.test._cache[0]
    assert task.test.load_cached(0)[0] is image  # training reads the cached tensor
    assert torch.equal(task.test[0]["image"], image)
    checks = validate_task(task)
    assert set(checks) == {"train", "test"} and checks["train"].n_items == 4 and checks["train"].n_masks == 0


def test_corrupt_png_and_wrong_size_mask_are_all_reported(bottle):
    root, cat = bottle
    (cat / "test" / "crack" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(cat / "ground_truth" / "cut" / "000_mask.png")
    (cat / "test" / "good" / "002.png").write_bytes((cat / "test" / "good" / "002.png").read_bytes()[:60])
    task = one_class_task("mvtec", "bottle", root=root)  # the file names are fine: the task builds
    with pytest.raises(InvalidSplitError) as e:
        validate_split(task.test, "bottle test")
    err = e.value
    msg = str(err)
    assert "\n" not in msg and msg.startswith("bottle test split: 3 of 7 item(s) failed validation: ")
    assert err.split == "bottle test" and err.n_items == 7
    assert [f.id for f in err.failures] == ["test/crack/001.png", "test/cut/000.png", "test/good/002.png"]
    assert all(isinstance(f, ItemFailure) for f in err.failures)
    by_id = {f.id: f for f in err.failures}
    assert (
        by_id["test/crack/001.png"].reason.startswith("unreadable (") and str(cat / "test" / "crack" / "001.png") in msg
    )
    assert "mask and image sizes differ" in by_id["test/cut/000.png"].reason
    assert "image (40, 40), mask (30, 30)" in by_id["test/cut/000.png"].reason
    assert str(cat / "ground_truth" / "cut" / "000_mask.png") in by_id["test/cut/000.png"].where
    assert by_id["test/good/002.png"].reason.startswith("unreadable (")
    # the items that passed are cached, the failed ones are not
    assert sorted(task.test._cache) == [0, 3, 4, 5]
    # only the first max_listed failures are spelled out; all are in .failures
    with pytest.raises(InvalidSplitError) as e:
        validate_split(task.test, "test", max_listed=1)
    assert "; and 2 more." in str(e.value) and len(e.value.failures) == 3
    validate_split(task.train, "train")  # the train split is intact


def test_subsets_are_checked_through_their_base_split(bottle):
    root, cat = bottle
    (cat / "test" / "cut" / "001.png").write_bytes(b"garbage")
    task = one_class_task("mvtec", "bottle", root=root)
    bad = task.test.ids.index("test/cut/001.png")
    good = [i for i in range(len(task.test)) if i != bad]
    check = validate_split(Subset(task.test, good[:3]), "test")
    assert check.n_items == 3 and sorted(task.test._cache) == sorted(good[:3])  # only the subset was decoded
    subset = Subset(task.test, [good[3], bad, good[4]])
    with pytest.raises(InvalidSplitError) as e:
        validate_split(subset, "test")
    (f,) = e.value.failures
    assert (f.position, f.id) == (1, "test/cut/001.png") and "1 of 3 item(s)" in str(e.value)
    nested = Subset(Subset(task.test, good), [0, 4])  # nested subsets resolve to the base split
    assert validate_split(nested, "test").n_items == 2 and good[4] in task.test._cache


def test_mnist_split_and_limited_subset(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    patch_idx_official(monkeypatch, tmp_path)
    task = one_class_task("mnist", 3, root=tmp_path)
    check = validate_split(Subset(task.test, list(range(0, 20, 2))), "test")
    assert check.n_items == 10 and check.n_masks == 0 and len(task.test._cache) == 10
    assert validate_split(task.train, "train", progress=True).n_anomalous == 0


def test_folder_without_masks_and_the_textures_standin_pass(tmp_path):
    write_mvtec_category(tmp_path / "part", masks=False)
    task = one_class_task("folder", None, root=tmp_path / "part")
    assert not task.has_masks and validate_split(task.test, "test").n_masks == 0
    tex = one_class_task("textures", 0, n_train=4, n_test_good=2, n_test_defect=2)
    assert tex.test.has_masks
    check = validate_split(tex.test, "test", num_threads=2)
    assert check.n_anomalous == 2 and check.n_masks == 2


def test_any_dataset_of_dict_items_is_checked_through_getitem():
    ok = {"image": torch.rand(3, 32, 32), "label": 0, "mask": torch.zeros(1, 32, 32), "id": "a"}
    nan = {**ok, "image": torch.full((3, 32, 32), float("nan"))}
    with pytest.raises(InvalidSplitError) as e:
        validate_split(DictItems([ok, nan, ok]), "custom")
    (f,) = e.value.failures
    assert f.position == 1 and "non-finite" in f.reason
    assert validate_split(Subset(DictItems([ok, nan, ok]), [0, 2]), "custom").n_items == 2


@pytest.mark.parametrize(
    "image,mask,label,has_masks,expected",
    [
        (torch.rand(3, 32, 32), None, 0, False, []),
        (torch.rand(3, 32, 32), torch.ones(1, 32, 32), 1, True, []),
        (torch.rand(3, 32, 32) * 2, None, 0, False, ["image values in ["]),
        (torch.full((3, 32, 32), float("inf")), None, 0, False, ["non-finite"]),
        ((torch.rand(3, 32, 32) * 255).to(torch.uint8), None, 0, False, ["image dtype torch.uint8"]),
        (torch.rand(1, 32, 32), None, 0, False, ["image shape (1, 32, 32), expected (3, 32, 32)"]),
        (torch.rand(3, 32, 32), None, 1, True, ["anomalous item without a mask"]),
        (torch.rand(3, 32, 32), torch.ones(1, 32, 32), 0, True, ["normal item with a non-empty mask (1024"]),
        (torch.rand(3, 32, 32), torch.zeros(1, 16, 16), 1, True, ["mask shape (1, 16, 16)"]),
        (torch.rand(3, 32, 32), torch.full((1, 32, 32), 0.5), 1, True, ["mask has values other than 0 and 1"]),
        (torch.rand(3, 32, 32), None, 2, False, ["label 2"]),
    ],
)
def test_check_item_reasons(image, mask, label, has_masks, expected):
    problems = check_item(image, mask, label, 32, has_masks)
    assert len(problems) == len(expected)
    for p, e in zip(problems, expected):
        assert p.startswith(e) or e in p
