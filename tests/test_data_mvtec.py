"""MVTec AD and the user-folder dataset on tiny category trees; archive download, checksum, safe extraction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
import zipfile

import numpy as np
import pytest
import torch
from data_fixtures import make_tar, tar_with_member, write_mvtec_category
from PIL import Image

from piade_lib.data import (
    SOURCES,
    ChecksumMismatchError,
    CorruptImageError,
    DatasetNotFoundError,
    MaskPairingError,
    UnsafeArchiveError,
    mask_transform,
    one_class_task,
    safe_extract,
)


@pytest.fixture
def mvtec_root(tmp_path):
    base = tmp_path / "mvtec_anomaly_detection"
    masks = write_mvtec_category(base / "bottle")
    write_mvtec_category(base / "grid", grayscale=True, defects={"bent": 1, "broken": 2}, seed=1)
    return tmp_path, masks


def test_mvtec_counts_labels_ids_and_masks(mvtec_root):
    root, masks = mvtec_root
    task = one_class_task("mvtec", "bottle", root=root)
    assert task.has_masks and len(task.train) == 4 and len(task.test) == 7
    assert task.test.ids == [
        "test/crack/000.png",
        "test/crack/001.png",
        "test/cut/000.png",
        "test/cut/001.png",
        "test/good/000.png",
        "test/good/001.png",
        "test/good/002.png",
    ]
    assert task.test.labels == [1, 1, 1, 1, 0, 0, 0]
    assert task.train.ids[0] == "train/good/000.png"
    assert task.manifest["source"]["layout"] == "<root>/mvtec_anomaly_detection/bottle"
    mtf = mask_transform("mvtec", 120, "paper")
    for item in task.test:
        assert item["image"].shape == (3, 120, 120) and item["mask"].shape == (1, 120, 120)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        if item["label"] == 1:  # the mask file paired by name with this image
            assert torch.equal(item["mask"], mtf(torch.from_numpy(masks[item["id"]])))
            assert item["mask"].sum() > 0
        else:
            assert item["mask"].sum() == 0
    assert task.manifest["checksum"]["algorithm"] == "sha256" and len(task.manifest["checksum"]["value"]) == 64


def test_mvtec_grayscale_category_and_plain_root_layout(tmp_path):
    write_mvtec_category(tmp_path / "grid", grayscale=True)
    task = one_class_task("mvtec", "grid", root=tmp_path)  # <root>/<category> accepted too
    assert task.manifest["source"]["layout"] == "<root>/grid"
    img = task.train[0]["image"]
    assert img.shape == (3, 120, 120) and torch.equal(img[0], img[2])
    assert task.manifest["source"]["grayscale_category"] is True


def test_mvtec_missing_mask_and_extra_mask(mvtec_root):
    root, _ = mvtec_root
    gt = root / "mvtec_anomaly_detection" / "bottle" / "ground_truth" / "cut"
    (gt / "001_mask.png").rename(gt.parent / "001_mask.png.bak")
    with pytest.raises(MaskPairingError) as e:
        one_class_task("mvtec", "bottle", root=root)
    assert "test/cut/001.png" in str(e.value).replace("\\", "/") and "001_mask.png" in str(e.value)
    (gt.parent / "001_mask.png.bak").rename(gt / "001_mask.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(gt / "007_mask.png")
    with pytest.raises(MaskPairingError) as e:
        one_class_task("mvtec", "bottle", root=root)
    assert "007_mask.png" in str(e.value) and "without a test image" in str(e.value)


def test_mvtec_authors_subset_takes_first_15_of_each(tmp_path):
    write_mvtec_category(tmp_path / "screw", n_good=17, defects={"a_thread": 9, "b_tip": 9}, size=16)
    full = one_class_task("mvtec", "screw", root=tmp_path)
    sub = one_class_task("mvtec", "screw", root=tmp_path, authors_subset=True)
    assert len(full.test) == 35 and len(sub.test) == 30
    normal = [i for i, lab in zip(full.test.ids, full.test.labels) if lab == 0][:15]
    anomalous = [i for i, lab in zip(full.test.ids, full.test.labels) if lab == 1][:15]
    assert sub.test.ids == normal + anomalous
    assert anomalous[-1] == "test/b_tip/005.png"
    assert sub.manifest["params"]["authors_subset"] is True and "15" in sub.manifest["note"]


def test_mvtec_corrupt_image_names_the_file(mvtec_root):
    root, _ = mvtec_root
    bad = root / "mvtec_anomaly_detection" / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    task = one_class_task("mvtec", "bottle", root=root)
    with pytest.raises(CorruptImageError) as e:
        task.train[1]
    assert str(bad) in str(e.value)


def test_mvtec_missing_gives_layout_url_checksum(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        one_class_task("mvtec", "hazelnut", root=tmp_path)
    msg = str(e.value)
    for part in (
        "mvtec_anomaly_detection",
        "ground_truth",
        SOURCES["mvtec"].url,
        SOURCES["mvtec"].sha256,
        "PIADE_DATA",
    ):
        assert part in msg


def _tiny_mvtec_archive(tmp_path):
    src = tmp_path / "src"
    write_mvtec_category(src / "bottle", n_train=2, n_good=1, defects={"crack": 1}, size=16)
    (src / "readme.txt").write_text("tiny")
    (tmp_path / "srv").mkdir()
    return make_tar(tmp_path / "srv" / "mvtec_anomaly_detection.tar.xz", src, ".")


def test_mvtec_download_verifies_sha256_and_extracts(tmp_path, monkeypatch, serve_dir):
    archive = _tiny_mvtec_archive(tmp_path)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    base = serve_dir(archive.parent)
    monkeypatch.setitem(
        SOURCES, "mvtec", dataclasses.replace(SOURCES["mvtec"], url=f"{base}/{archive.name}", sha256=sha)
    )
    root = tmp_path / "data"
    task = one_class_task("mvtec", "bottle", root=root, download=True)
    assert len(task.train) == 2 and task.test.labels == [1, 0]
    assert (root / "mvtec_anomaly_detection" / "bottle" / "ground_truth").is_dir()
    assert (root / "mvtec_anomaly_detection.tar.xz").is_file() and not (
        root / "mvtec_anomaly_detection.tar.xz.part"
    ).exists()


def test_mvtec_placed_archive_with_wrong_checksum_is_kept(tmp_path):
    archive = _tiny_mvtec_archive(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    placed = root / "mvtec_anomaly_detection.tar.xz"
    placed.write_bytes(archive.read_bytes())
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("mvtec", "bottle", root=root)
    got = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert SOURCES["mvtec"].sha256 in str(e.value) and got in str(e.value) and "kept" in str(e.value)
    assert placed.read_bytes() == archive.read_bytes()
    assert not (root / "mvtec_anomaly_detection").exists()


@pytest.mark.parametrize(
    "name,kind,link",
    [
        ("../evil.txt", "file", ""),
        ("/tmp/abs_evil.txt", "file", ""),
        ("pkg/a/../../../evil.txt", "file", ""),
        ("pkg/link", "symlink", "/etc/passwd"),
        ("pkg/hard", "hardlink", "pkg/ok.txt"),
    ],
)
def test_safe_extract_rejects_unsafe_tar_members(tmp_path, name, kind, link):
    archive = tar_with_member(tmp_path / "bad.tar.gz", name, kind, link)
    dest = tmp_path / "out" / "pkg_dest"
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, dest)
    assert name in str(e.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []  # staging removed


def test_safe_extract_rejects_zip_traversal_and_extracts_good_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("coil-100/obj1__0.png", b"x")
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(bad, tmp_path / "x" / "coil-100")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "x" / "coil-100").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("coil-100/obj2__0.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(link, tmp_path / "z" / "coil-100")
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("coil-100/obj1__0.png", b"x")
    out = safe_extract(good, tmp_path / "y" / "coil-100")
    assert (out / "obj1__0.png").read_bytes() == b"x"  # the single top folder became the target


def test_folder_dataset_any_format_without_test(tmp_path):
    cat = tmp_path / "my_parts"
    rng = np.random.default_rng(0)
    for i, ext in enumerate([".jpg", ".jpeg", ".bmp", ".tif", ".webp", ".png"]):
        (cat / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(cat / "train" / "good" / f"{i}{ext}")
    (cat / "train" / "good" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="test set is empty"):
        task = one_class_task("folder", None, root=cat)
    assert task.normal_class == "my_parts" and len(task.train) == 6 and len(task.test) == 0
    assert not task.has_masks and any("empty" in w for w in task.manifest["warnings"])
    assert all(task.train[i]["image"].shape == (3, 120, 120) for i in range(6))


def test_folder_dataset_with_test_and_optional_masks(tmp_path):
    cat = tmp_path / "widget"
    write_mvtec_category(cat, masks=False, ext=".jpg", defects={"dent": 2})
    task = one_class_task("folder", "widget", root=cat, image_size=32)
    assert not task.has_masks and task.test.labels == [1, 1, 0, 0, 0]
    assert task.test[0]["image"].shape == (3, 32, 32) and task.test[0]["mask"].sum() == 0
    with_masks = tmp_path / "widget2"
    write_mvtec_category(with_masks, defects={"dent": 2})
    assert one_class_task("folder", "w", root=with_masks).has_masks


def test_data_root_env_var_and_default(tmp_path, monkeypatch):
    write_mvtec_category(tmp_path / "env" / "bottle", n_train=1, n_good=1, defects={"c": 1}, size=8)
    monkeypatch.setenv("PIADE_DATA", str(tmp_path / "env"))
    assert len(one_class_task("mvtec", "bottle").train) == 1
    monkeypatch.delenv("PIADE_DATA")
    write_mvtec_category(tmp_path / "cwd" / "data" / "mvtec_anomaly_detection" / "bottle", n_train=2, size=8)
    monkeypatch.chdir(tmp_path / "cwd")
    task = one_class_task("mvtec", 0)
    assert len(task.train) == 2
    path = task.write_manifest(tmp_path / "out" / "manifest.json")
    assert json.loads(path.read_text()) == task.manifest
