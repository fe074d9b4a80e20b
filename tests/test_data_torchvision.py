"""CIFAR-10, MNIST and Fashion-MNIST through torchvision, on tiny files in the real formats.

CIFAR10 checks the md5 of every batch file against a table in the class even with download=False,
so the tests point that table (class attributes) at the tiny files' md5s: the integrity check
itself still runs, exactly as for users.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import (
    make_tar,
    patch_cifar_md5,
    patch_idx_official,
    write_cifar10,
    write_idx_images,
    write_idx_labels,
    write_mnist,
)
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5

from piade_lib.data import (
    ChecksumMismatchError,
    CorruptImageError,
    DatasetNotFoundError,
    UnverifiedDataWarning,
    classes,
    download,
    one_class_task,
)


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    info = write_cifar10(tmp_path)
    patch_cifar_md5(monkeypatch, info["md5"])
    return tmp_path, info


def test_cifar10_lsa_split_labels_and_pixels(cifar):
    root, info = cifar
    task = one_class_task("cifar10", "cat", root=root)
    c = classes("cifar10").index("cat")
    train_labels, test_labels = np.array(info["train_labels"]), np.array(info["test_labels"])
    assert len(task.train) == (train_labels == c).sum() == 10
    assert len(task.test) == len(test_labels) == 30
    assert task.test.labels == [int(t != c) for t in test_labels]
    assert task.manifest["n_test_normal"] == 3 and task.manifest["n_test_anomalous"] == 27
    assert task.val is None and not task.has_masks
    # the first training item is the first cat image of the train split, pixels unchanged (32 -> 32)
    first = int(np.flatnonzero(train_labels == c)[0])
    item = task.train[0]
    assert item["id"] == f"train/{first:05d}" and item["label"] == 0
    expected = torch.from_numpy(info["train"][first]).permute(2, 0, 1).float() / 255
    assert torch.allclose(item["image"], expected)
    assert item["mask"].shape == (1, 32, 32) and item["mask"].sum() == 0
    assert task.manifest["checksum"]["files"]["cifar-10-batches-py/test_batch"] == info["md5"]["test_batch"]
    assert task.manifest["standin"] is False and "Table 2" in task.manifest["note"]


def test_cifar10_holdout_is_seeded_and_disjoint(cifar):
    root, _ = cifar
    a = one_class_task("cifar10", 3, root=root, seed=1, holdout_fraction=0.3)
    b = one_class_task("cifar10", 3, root=root, seed=1, holdout_fraction=0.3)
    c = one_class_task("cifar10", 3, root=root, seed=2, holdout_fraction=0.3)
    assert a.manifest == b.manifest
    assert len(a.val) == 3 and len(a.train) == 7
    assert not set(a.train.ids) & set(a.val.ids)
    assert a.manifest["val_ids"] != c.manifest["val_ids"]
    assert sorted(a.train.ids + a.val.ids) == sorted(c.train.ids + c.val.ids)


def test_cifar10_corrupted_batch_is_reported_and_kept(cifar):
    root, info = cifar
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("cifar10", 0, root=root)
    msg = str(e.value)
    assert info["md5"]["data_batch_2"] in msg and calculate_md5(str(batch)) in msg and "data_batch_2" in msg
    assert batch.exists()


def test_cifar10_missing_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        one_class_task("cifar10", 0, root=tmp_path)
    msg = str(e.value)
    for part in ("cifar-10-batches-py", CIFAR10.url, CIFAR10.tgz_md5, "PIADE_DATA", "root=", "download"):
        assert part in msg


def test_cifar10_download_through_torchvision(tmp_path, monkeypatch, serve_dir):
    src = tmp_path / "src"
    info = write_cifar10(src)
    archive = make_tar(tmp_path / "cifar-10-python.tar.gz", src / "cifar-10-batches-py", "cifar-10-batches-py")
    base = serve_dir(tmp_path)
    patch_cifar_md5(monkeypatch, info["md5"])
    monkeypatch.setattr(CIFAR10, "url", f"{base}/{archive.name}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", calculate_md5(str(archive)))
    root = tmp_path / "data"
    assert download("cifar10", root) == root / "cifar-10-batches-py"
    assert len(one_class_task("cifar10", "truck", root=root).test) == 30


@pytest.mark.parametrize("dataset,tv_class", [("mnist", MNIST), ("fashion_mnist", FashionMNIST)])
def test_mnist_family_idx_files(tmp_path, monkeypatch, dataset, tv_class):
    data = write_mnist(tmp_path, tv_class.__name__)
    patch_idx_official(monkeypatch, tmp_path, dataset)  # the tiny files play the official release
    name = classes(dataset)[4]
    assert "/" not in name
    task = one_class_task(dataset, name, root=tmp_path)
    tr_images, tr_labels = data["train"]
    _, te_labels = data["t10k"]
    assert len(task.train) == (tr_labels == 4).sum() == 3
    assert task.test.labels == [int(t != 4) for t in te_labels]
    item = task.train[0]
    img = item["image"]
    assert img.shape == (3, 32, 32) and 0 <= img.min() and img.max() <= 1
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # grayscale repeated
    first = int(np.flatnonzero(tr_labels == 4)[0])
    assert item["id"] == f"train/{first:05d}"
    # 28 -> 32 bilinear keeps the mean brightness approximately
    assert abs(img[0].mean().item() - tr_images[first].mean() / 255) < 0.02
    md5 = task.manifest["checksum"]["files"][f"{tv_class.__name__}/raw/train-images-idx3-ubyte"]
    assert md5 == calculate_md5(str(tmp_path / tv_class.__name__ / "raw" / "train-images-idx3-ubyte"))
    assert task.manifest["source"]["official_files"] is True and task.manifest["source"]["verification"].startswith(
        "official"
    )
    assert "verify_checksums" not in task.manifest["params"] and not task.manifest["warnings"]


def test_mnist_download_with_md5_check(tmp_path, monkeypatch, serve_dir):
    srv = tmp_path / "srv"
    write_mnist(srv, gz=True)
    base = serve_dir(srv)
    resources = [(p.name, calculate_md5(str(p))) for p in sorted(srv.glob("*.gz"))]
    monkeypatch.setattr(MNIST, "mirrors", [f"{base}/"])
    monkeypatch.setattr(MNIST, "resources", resources)
    root = tmp_path / "data"
    task = one_class_task("mnist", "7", root=root, download=True)
    assert len(task.train) == 3 and len(task.test) == 20
    assert (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    # a wrong md5 for the download is refused by torchvision
    monkeypatch.setattr(MNIST, "resources", [(n, "0" * 32) for n, _ in resources])
    with pytest.raises(Exception) as e:
        download("mnist", tmp_path / "other")
    assert "corrupted" in str(e.value) or "md5" in str(e.value).lower()


def test_mnist_corrupt_idx_names_the_folder(tmp_path):
    write_mnist(tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 0, root=tmp_path)
    assert "MNIST" in str(e.value) and "raw" in str(e.value)


# ------------------------------------------------------------- the MNIST family's raw files are checked
def _one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "reshape" not in msg
    return msg


@pytest.mark.parametrize("verify", [True, False])
def test_mnist_truncated_image_file_is_refused_with_counts_and_fix(tmp_path, verify):
    write_mnist(tmp_path)  # 30 train images
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1000])
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 0, root=tmp_path, verify_checksums=verify)
    msg = _one_line_error(e)
    assert str(bad) in msg and "truncated" in msg and "30 images (23,536 bytes)" in msg
    assert "22,536 bytes (28 complete images)" in msg and f"piade download mnist --root {tmp_path}" in msg
    assert e.value.path == bad


def test_mnist_truncated_official_size_file_names_the_official_count(tmp_path):
    write_mnist(tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images = np.zeros((100, 28, 28), np.uint8)
    write_idx_images(bad, images)
    data = bad.read_bytes()  # a download cut short: the header of the real file, 100 of its images
    bad.write_bytes(data[:4] + (60_000).to_bytes(4, "big") + data[8:])
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 0, root=tmp_path)
    msg = _one_line_error(e)
    assert "60,000 images (47,040,016 bytes)" in msg and "78,416 bytes (100 complete images)" in msg


@pytest.mark.parametrize("verify", [True, False])
def test_mnist_50_images_and_40_labels_are_refused(tmp_path, verify):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte", np.zeros((50, 28, 28), np.uint8))
    write_idx_labels(raw / "train-labels-idx1-ubyte", np.arange(40) % 10)
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 3, root=tmp_path, verify_checksums=verify)
    msg = _one_line_error(e)
    assert str(raw / "train-labels-idx1-ubyte") in msg and str(raw / "train-images-idx3-ubyte") in msg
    assert "40 labels" in msg and "50 images" in msg and "60,000 of each" in msg
    assert f"piade download mnist --root {tmp_path}" in msg


def test_mnist_bad_header_and_labels_are_refused(tmp_path):
    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.array([1, 2, 11] + [0] * 17))
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 3, root=tmp_path, verify_checksums=False)
    assert "label 11 at position 2" in _one_line_error(e)
    write_mnist(tmp_path)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b" + bytes(30))
    with pytest.raises(CorruptImageError) as e:
        one_class_task("mnist", 3, root=tmp_path)
    assert "magic number" in _one_line_error(e) and "gzip" in str(e.value)


def test_mnist_files_that_are_not_the_official_ones_are_refused(tmp_path):
    write_mnist(tmp_path)  # well-formed, with the official names, but 30 images instead of 60,000
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("mnist", 3, root=tmp_path)
    msg = _one_line_error(e)
    assert e.value.path == path and str(path) in msg
    assert "expected 6bbc9ace898e44ae57da46a324031adb (the official file: 60,000 images, 47,040,016 bytes)" in msg
    assert f"got {calculate_md5(str(path))} (30 images, 23,536 bytes)" in msg
    assert f"piade download mnist --root {tmp_path}" in msg and "verify_checksums=False" in msg


def test_mnist_same_size_file_with_other_bytes_fails_its_md5(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    patch_idx_official(monkeypatch, tmp_path)
    one_class_task("mnist", 3, root=tmp_path)  # the "official" files pass
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    want = calculate_md5(str(path))
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF  # one flipped byte: same size, same counts
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("mnist", 3, root=tmp_path)
    msg = _one_line_error(e)
    assert str(path) in msg and f"expected {want}" in msg and f"got {calculate_md5(str(path))} (20 images" in msg


def test_mnist_raw_files_unpacked_from_verified_gz_files_pass(tmp_path, monkeypatch):
    import gzip

    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
    monkeypatch.setattr(MNIST, "resources", [(p, calculate_md5(str(raw / p))) for p, _ in MNIST.resources])
    task = one_class_task("mnist", 3, root=tmp_path)  # torchvision's .gz md5s vouch for the raw files
    assert "unpacked from t10k-images-idx3-ubyte.gz" in task.manifest["source"]["verification"]
    path = raw / "t10k-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("mnist", 3, root=tmp_path)
    assert f"{raw / 't10k-images-idx3-ubyte.gz'} is there too but unpacks to other bytes" in _one_line_error(e)


def test_mnist_verify_checksums_false_accepts_own_idx_files_and_says_so(tmp_path):
    write_mnist(tmp_path)
    with pytest.warns(UnverifiedDataWarning, match="not the official MNIST release"):
        task = one_class_task("mnist", 3, root=tmp_path, verify_checksums=False)
    assert len(task.train) == 3 and task.manifest["source"]["official_files"] is False
    assert task.manifest["source"]["verification"].startswith("skipped (verify_checksums=False)")
    assert "verify_checksums" not in task.manifest["params"] and task.manifest["warnings"]


def test_mnist_md5s_are_computed_once_per_file_version(tmp_path, monkeypatch):
    import hashlib
    import os

    from piade_lib.data import base

    write_mnist(tmp_path)
    patch_idx_official(monkeypatch, tmp_path)
    calls: list[str] = []
    real_new = hashlib.new

    def counting_new(name, *args, **kwargs):
        calls.append(name)
        return real_new(name, *args, **kwargs)

    monkeypatch.setattr(base.hashlib, "new", counting_new)
    one_class_task("mnist", 3, root=tmp_path)
    first = calls.count("md5")
    one_class_task("mnist", 5, root=tmp_path)
    assert first <= 4 and calls.count("md5") == first  # the second task reuses the cached md5s
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new modification time: computed again
    one_class_task("mnist", 5, root=tmp_path)
    assert calls.count("md5") == first + 1


def test_mnist_missing_lists_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        one_class_task("fashion_mnist", 0, root=tmp_path)
    assert "FashionMNIST" in str(e.value) and "train-images-idx3-ubyte" in str(e.value) and "PIADE_DATA" in str(e.value)
