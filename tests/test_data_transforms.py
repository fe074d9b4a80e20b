"""Preprocessing (one place for training and scoring), registry and argument errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from data_fixtures import write_mvtec_category
from PIL import Image

from piade_lib.data import (
    DATASETS,
    DEFAULT_IMAGE_SIZE,
    CorruptImageError,
    UnknownClassError,
    UnknownDatasetError,
    UnknownProtocolError,
    UnsupportedImageSizeError,
    classes,
    image_transform,
    load_image_for_scoring,
    mask_transform,
    one_class_task,
    preprocessing_summary,
)


def _framed(size: int = 312, border: int = 36) -> torch.Tensor:
    """Red frame ``border`` px wide around a blue centre: float (3, size, size)."""
    x = torch.zeros(3, size, size)
    x[0] = 1.0
    x[0, border:-border, border:-border] = 0.0
    x[2, border:-border, border:-border] = 1.0
    return x


def test_authors_code_preset_resizes_then_crops_paper_resizes_only():
    img = _framed()  # at 156 px the frame is 18 px wide: CenterCrop(120) of 156 cuts exactly 18 per side
    paper = image_transform("mvtec", 120, "paper")(img)
    code = image_transform("mvtec", 120, "authors_code")(img)
    assert paper.shape == code.shape == (3, 120, 120)
    assert paper[0, :5, :].mean() > 0.9  # the frame is still there
    assert code[0].max() < 0.5 and code[2, 1:-1, 1:-1].min() > 0.5  # the frame is cropped away
    # 32x32 datasets ignore the ratio (no crop) for both presets
    small = _framed(32, 4)
    assert torch.allclose(image_transform("cifar10", 32, "authors_code")(small), small)
    assert preprocessing_summary("mvtec", 120, "authors_code")["resize_to"] == [156, 156]
    assert preprocessing_summary("coil100", 120, "paper")["resize_to"] == [120, 120]


def test_mask_follows_image_geometry_with_nearest():
    m = torch.zeros(1, 240, 240)
    m[:, :, :120] = 1.0  # left half
    out = mask_transform("mvtec", 120, "paper")(m)
    assert out.shape == (1, 120, 120) and set(out.unique().tolist()) == {0.0, 1.0}
    assert out[:, :, :60].min() == 1 and out[:, :, 60:].max() == 0
    code = mask_transform("mvtec", 120, "authors_code")(torch.from_numpy(np.full((312, 312), 255, np.uint8)))
    assert code.shape == (1, 120, 120) and code.min() == 1  # uint8 0/255 masks become {0,1}


def test_grayscale_and_rgba_become_rgb():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    out = image_transform("cifar10", 32)(gray)
    assert out.shape == (3, 32, 32) and torch.equal(out[0], out[1])
    rgba = Image.fromarray(np.full((10, 10, 4), 200, np.uint8), "RGBA")
    assert image_transform("folder", 32)(rgba).shape == (3, 32, 32)


def test_scoring_loader_matches_training_items(tmp_path):
    cat = tmp_path / "part"
    write_mvtec_category(cat, grayscale=True, ext=".png")
    for preset in ("paper", "authors_code"):
        task = one_class_task("folder", "part", root=cat, preset=preset)
        for i in (0, 2):
            path = cat / task.test.ids[i]
            assert torch.equal(load_image_for_scoring(path, "folder", 120, preset), task.test[i]["image"])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(CorruptImageError) as e:
        load_image_for_scoring(bad)
    assert str(bad) in str(e.value)


def test_image_size_validation():
    for bad in (64, 0, 33.5):
        with pytest.raises(UnsupportedImageSizeError, match="32 and 120"):
            one_class_task("digits", 0, image_size=bad)
    assert one_class_task("digits", 0, image_size=120).train[0]["image"].shape == (3, 120, 120)
    assert {d: DATASETS[d].image_size for d in DATASETS} == DEFAULT_IMAGE_SIZE
    assert DEFAULT_IMAGE_SIZE["cifar10"] == 32 and DEFAULT_IMAGE_SIZE["mvtec"] == 120


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownClassError) as e:
        one_class_task("textures", "marble")
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    assert "brick" in str(e.value) and "gravel" in str(e.value)
    with pytest.raises(UnknownClassError, match="out of range"):
        one_class_task("digits", 10)
    with pytest.raises(UnknownDatasetError, match="cifar10"):
        one_class_task("cifar100", 0)
    with pytest.raises(UnknownProtocolError, match="lsa"):
        one_class_task("digits", 0, protocol="mvtec")
    with pytest.raises(UnknownProtocolError, match="test_fraction"):
        one_class_task("digits", 0, test_fracton=0.2)
    with pytest.raises(ValueError, match="outlier_fraction"):
        one_class_task("digits", 0, protocol="gpnd", outlier_fraction=1.0)


def test_registry_and_classes():
    assert set(DATASETS) == {"cifar10", "mnist", "fashion_mnist", "mvtec", "coil100", "digits", "textures", "folder"}
    assert len(classes("mvtec")) == 15 and classes("mvtec")[0] == "bottle"
    assert classes("cifar10")[3] == "cat" and classes("fashion_mnist")[0] == "tshirt_top"
    assert [DATASETS[d].default_protocol for d in ("cifar10", "mvtec", "coil100", "digits")] == [
        "lsa",
        "mvtec",
        "gpnd",
        "lsa",
    ]
    assert [d for d in DATASETS if DATASETS[d].standin] == ["digits", "textures"]
    assert classes("folder") == [] and classes("folder", root="x/my_parts") == ["my_parts"]


def test_items_batch_with_default_collate_and_pickle(tmp_path):
    task = one_class_task("textures", "grass", n_train=4, n_test_good=2, n_test_defect=4)
    batch = next(iter(torch.utils.data.DataLoader(task.test, batch_size=6)))
    assert batch["image"].shape == (6, 3, 120, 120) and batch["mask"].shape == (6, 1, 120, 120)
    assert batch["label"].tolist() == task.test.labels and batch["id"] == task.test.ids
    uncached = [task.test[i]["image"] for i in range(len(task.test))]
    task.test.preload(num_threads=2)
    images, labels = task.test.tensors()
    assert torch.equal(images, torch.stack(uncached)) and labels.tolist() == task.test.labels
    clone = pickle.loads(pickle.dumps(task.test))  # DataLoader workers under "spawn" pickle the dataset
    assert torch.equal(clone[3]["mask"], task.test[3]["mask"])


@pytest.mark.parametrize("values, mode", [((0, 255), "L"), ((0, 1), "L"), ((0, 1), "I;16"), ((0, 40000), "I;16")])
def test_mask_files_mark_every_nonzero_pixel(tmp_path, values, mode):
    """MVTec's 0/255 masks, 0/1 label images and 16-bit masks all load as the same {0,1} mask."""
    from PIL import Image

    from piade_lib.data.transforms import load_mask

    arr = np.zeros((6, 8), dtype=np.uint16 if mode == "I;16" else np.uint8)
    arr[2:4, 3:6] = values[1]
    path = tmp_path / "m.png"
    Image.fromarray(arr).save(path)  # uint8 -> "L", uint16 -> "I;16"
    assert Image.open(path).mode.startswith(mode[0])
    from piade_lib.data.base import FileSource

    for mask in (load_mask(path), FileSource(tmp_path).mask(("image.png", "m.png"))):  # the loader's own path
        assert mask.shape == (1, 6, 8)
        assert torch.equal(mask[0], torch.from_numpy(arr > 0).float())
