"""Writers of tiny datasets in the real on-disk formats, and a local HTTP server, for the data tests.

Imported by tests/test_data_*.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import gzip
import http.server
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------------------- CIFAR-10
def write_cifar10(root: Path, per_class_per_batch: int = 2, test_per_class: int = 3, seed: int = 0) -> dict:
    """Write ``root/cifar-10-batches-py`` (5 train batches, test batch, batches.meta) in the python pickle format.

    Returns ``{"train": (N,32,32,3) uint8, "train_labels", "test", "test_labels", "md5": {file: md5}}``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n_per_class: int, name: str) -> tuple[np.ndarray, list[int]]:
        labels = [c for c in range(10) for _ in range(n_per_class)]
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3 * 32 * 32), dtype=np.uint8)
        entry = {
            "batch_label": name,
            "labels": list(map(int, labels)),
            "data": data,
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    tr = [batch(per_class_per_batch, f"data_batch_{i}") for i in range(1, 6)]
    te = batch(test_per_class, "test_batch")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": 10 * per_class_per_batch, "num_vis": 3072}, f)
    md5 = {p.name: calculate_md5(str(p)) for p in folder.iterdir()}
    return {
        "train": np.concatenate([d for d, _ in tr]),
        "train_labels": [label for _, labels in tr for label in labels],
        "test": te[0],
        "test_labels": te[1],
        "md5": md5,
    }


def patch_cifar_md5(monkeypatch: pytest.MonkeyPatch, md5: dict[str, str]) -> None:
    """Point torchvision's CIFAR10 md5 table at the tiny files, so its own integrity check runs on them."""
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})


# --------------------------------------------------------------------------------------- MNIST (idx)
def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 (magic 2051), big-endian dims, uint8 pixels."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1 (magic 2049), uint8 labels."""
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + np.asarray(labels, dtype=np.uint8).tobytes())


def write_mnist(
    root: Path,
    folder_name: str = "MNIST",
    train_per_class: int = 3,
    test_per_class: int = 2,
    seed: int = 0,
    gz: bool = False,
) -> dict:
    """Write ``root/<folder_name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or ``.gz`` copies in ``root``)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) if gz else Path(root) / folder_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, per in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.array([c for c in range(10) for _ in range(per)], dtype=np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        for kind, writer, arr in (("images-idx3", write_idx_images, images), ("labels-idx1", write_idx_labels, labels)):
            p = raw / f"{split}-{kind}-ubyte"
            writer(p, arr)
            if gz:
                with open(p, "rb") as fi, gzip.open(str(p) + ".gz", "wb") as fo:
                    fo.write(fi.read())
                p.unlink()
        out[split] = (images, labels)
    return out


def patch_idx_official(monkeypatch: pytest.MonkeyPatch, root: Path, dataset: str = "mnist") -> None:
    """Point the table of official raw files (item counts, md5s) at the tiny IDX files under ``root``,
    so the check that refuses anything but the official release runs on them, exactly as for users."""
    from piade_lib.data import torchvision_sets

    folder = Path(root) / torchvision_sets.TV_CLASS[dataset].__name__ / "raw"
    table = {}
    for name in torchvision_sets.IDX_OFFICIAL[dataset]:
        count = struct.unpack(">II", (folder / name).read_bytes()[:8])[1]
        table[name] = (count, calculate_md5(str(folder / name)))
    monkeypatch.setitem(torchvision_sets.IDX_OFFICIAL, dataset, table)


# ----------------------------------------------------------------------------------------- MVTec tree
def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_mvtec_category(
    cat_dir: Path,
    grayscale: bool = False,
    n_train: int = 4,
    n_good: int = 3,
    defects: dict[str, int] | None = None,
    size: int = 40,
    seed: int = 0,
    masks: bool = True,
    ext: str = ".png",
) -> dict[str, np.ndarray]:
    """Write an MVTec category; anomalous images get a bright square whose mask is written beside them.

    Returns the mask arrays by relative image path.
    """
    defects = {"crack": 2, "cut": 2} if defects is None else defects
    rng = np.random.default_rng(seed)
    shape = (size, size) if grayscale else (size, size, 3)

    def img() -> np.ndarray:
        return rng.integers(0, 120, size=shape, dtype=np.uint8)

    for i in range(n_train):
        _png(cat_dir / "train" / "good" / f"{i:03d}{ext}", img())
    for i in range(n_good):
        _png(cat_dir / "test" / "good" / f"{i:03d}{ext}", img())
    written = {}
    for d, n in defects.items():
        for i in range(n):
            a = img()
            m = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size // 2, size=2)
            m[y : y + size // 2, x : x + size // 2] = 255
            a[m > 0] = 255
            _png(cat_dir / "test" / d / f"{i:03d}{ext}", a)
            if masks:
                _png(cat_dir / "ground_truth" / d / f"{i:03d}_mask.png", m)
            written[f"test/{d}/{i:03d}{ext}"] = m
    return written


# ------------------------------------------------------------------------------------------- COIL-100
def write_coil(folder: Path, n_objects: int = 5, n_views: int = 10, size: int = 16, seed: int = 0) -> None:
    """``obj{k}__{angle}.png`` files plus the archive's non-image ``convertGroupppm2png.pl``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(1, n_objects + 1):
        for v in range(n_views):
            _png(folder / f"obj{k}__{5 * v}.png", rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
    (folder / "convertGroupppm2png.pl").write_text("#!/usr/bin/perl\n# converts ppm to png\n")


# ----------------------------------------------------------------------------------------- archives
def make_tar(archive: Path, src_dir: Path, arcname: str) -> Path:
    mode = "w:xz" if archive.name.endswith(".xz") else "w:gz"
    with tarfile.open(archive, mode) as tf:
        tf.add(src_dir, arcname=arcname)
    return archive


def make_zip(archive: Path, src_dir: Path, arcname: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src_dir.rglob("*")):
            zf.write(p, f"{arcname}/{p.relative_to(src_dir).as_posix()}")
    return archive


def tar_with_member(archive: Path, name: str, kind: str = "file", linkname: str = "") -> Path:
    """A .tar.gz holding one good file and one member ``name`` of type ``kind`` ("file", "symlink", "hardlink")."""
    with tarfile.open(archive, "w:gz") as tf:
        good = tarfile.TarInfo("pkg/ok.txt")
        good.size = 2
        tf.addfile(good, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if kind == "file":
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        else:
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = linkname
            tf.addfile(info)
    return archive


# -------------------------------------------------------------------------------------- HTTP server
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


__all__ = [
    "CIFAR_NAMES",
    "QuietHandler",
    "make_tar",
    "make_zip",
    "patch_cifar_md5",
    "patch_idx_official",
    "tar_with_member",
    "write_cifar10",
    "write_coil",
    "write_idx_images",
    "write_idx_labels",
    "write_mnist",
    "write_mvtec_category",
]


class DictItems(Dataset):
    """A dataset of the given dict items (``image``, ``label``, ...), not an ImageDataset (the generic path)."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
