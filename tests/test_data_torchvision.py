"""CIFAR-10, MNIST and Fashion-MNIST through torchvision, on tiny files in the real formats.

CIFAR10 checks the md5 of every batch file against a table in the class even with download=False,
so the tests point that table (class attributes) at the tiny files' md5s: the integrity check
itself still runs, exactly as for users.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import (  # noqa: F401
    make_tar,
    patch_cifar_md5,
    serve_dir,
    write_cifar10,
    write_mnist,
)
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5

from piade_lib.data import (
    ChecksumMismatchError,
    CorruptImageError,
    DatasetNotFoundError,
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
def test_mnist_family_idx_files(tmp_path, dataset, tv_class):
    data = write_mnist(tmp_path, tv_class.__name__)
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


def test_mnist_missing_lists_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        one_class_task("fashion_mnist", 0, root=tmp_path)
    assert "FashionMNIST" in str(e.value) and "train-images-idx3-ubyte" in str(e.value) and "PIADE_DATA" in str(e.value)
