"""CIFAR-10, MNIST and Fashion-MNIST through torchvision's dataset classes, under the LSA one-class protocol.

LSA protocol (Abati et al., CVPR 2019; PIADE Table 2): train = the normal class's train images,
test = the whole test split (normal class -> label 0, the nine others -> label 1). With
``holdout_fraction > 0`` a seeded share of the normal train images is held out as ``val`` (for
score normalisation); the training set is then the rest.

torchvision checks: CIFAR10 verifies the md5 of every batch file even with ``download=False``;
MNIST/FashionMNIST only check that the four uncompressed ``raw/`` files exist (md5s are checked on
the downloaded ``.gz`` archives), so their manifest records the md5s we compute of the raw files.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5, check_integrity

from piade_lib.data.archives import RemoteFile, fetch, locate_or_extract, verify
from piade_lib.data.base import (
    ArraySource,
    Record,
    file_digest,
    holdout_split,
    how_to_point_at_data,
)
from piade_lib.data.errors import (
    ChecksumMismatchError,
    CorruptImageError,
    DatasetDownloadError,
    DatasetNotFoundError,
)

CLASSES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "mnist": tuple(str(i) for i in range(10)),
    # torchvision's names ("T-shirt/top", ...) made safe for folder names
    "fashion_mnist": ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle_boot"),
}
TV_CLASS = {"cifar10": CIFAR10, "mnist": MNIST, "fashion_mnist": FashionMNIST}
LSA_DEFAULTS: dict[str, Any] = {"holdout_fraction": 0.0, "download": False}


def _layout(dataset: str) -> str:
    if dataset == "cifar10":
        files = ", ".join(n for n, _ in CIFAR10.train_list + CIFAR10.test_list) + ", " + CIFAR10.meta["filename"]
        return (
            f"<root>/{CIFAR10.base_folder}/ holding {files} (the python version, {CIFAR10.url}, "
            f"md5 {CIFAR10.tgz_md5}, extracted)"
        )
    cls = TV_CLASS[dataset]
    files = ", ".join(f"{Path(n).stem}" for n, _ in cls.resources)
    gz = "; ".join(f"{n} md5 {m}" for n, m in cls.resources)
    return f"<root>/{cls.__name__}/raw/ holding {files} (uncompressed; from {cls.mirrors[0]}: {gz})"


def _not_found(dataset: str, root: Path, detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset} not found: {detail}. Expected layout: {_layout(dataset)}. Get it with "
        f"`piade download {dataset} --root {root}` (or piade_lib.data.download({dataset!r}, root), or "
        f"one_class_task(..., download=True); the md5s are checked), or place the files by hand. " + how_to_point_at_data(root)
    )


def _diagnose_cifar(root: Path) -> Exception:
    folder = root / CIFAR10.base_folder
    entries = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    missing = [n for n, _ in entries if not (folder / n).is_file()]
    if missing:
        return _not_found("cifar10", root, f"missing {', '.join(str(folder / n) for n in missing)}")
    for name, md5 in entries:
        if not check_integrity(str(folder / name), md5):
            return ChecksumMismatchError(folder / name, md5, calculate_md5(str(folder / name)), algorithm="md5")
    return CorruptImageError(folder, "torchvision could not read the batch files")


def load_arrays(dataset: str, root: Path, download: bool = False) -> dict[str, Any]:
    """Train/test uint8 arrays and targets of a torchvision dataset, with the checksum record."""
    cls = TV_CLASS[dataset]
    if download:
        _download(dataset, Path(root))
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except (urllib.error.URLError, OSError) as e:
        raise DatasetDownloadError(
            f"downloading {dataset} failed ({type(e).__name__}: {e}). Expected layout: {_layout(dataset)}. "
            + how_to_point_at_data(root)
        ) from e
    except RuntimeError as e:
        if download and "download" in str(e).lower() and "error" in str(e).lower():
            raise DatasetDownloadError(f"downloading {dataset} failed: {e}. " + how_to_point_at_data(root)) from e
        if dataset == "cifar10":
            raise _diagnose_cifar(root) from e
        raw = Path(root) / cls.__name__ / "raw"
        missing = [str(raw / Path(n).stem) for n, _ in cls.resources if not (raw / Path(n).stem).is_file()]
        if missing:
            raise _not_found(dataset, root, f"missing {', '.join(missing)}") from e
        raise CorruptImageError(raw, f"{type(e).__name__}: {e}") from e
    except (ValueError, TypeError, IndexError, EOFError, pickle.UnpicklingError) as e:  # malformed idx / pickles
        folder = Path(root) / (CIFAR10.base_folder if dataset == "cifar10" else f"{cls.__name__}/raw")
        raise CorruptImageError(folder, f"{type(e).__name__}: {e}") from e

    if dataset == "cifar10":
        entries = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        checksum = {
            "algorithm": "md5",
            "files": {f"{CIFAR10.base_folder}/{n}": m for n, m in entries},
            "verified": "by torchvision CIFAR10 against its md5 table",
        }
        tr = torch.from_numpy(np.asarray(train.data)).permute(0, 3, 1, 2)
        te = torch.from_numpy(np.asarray(test.data)).permute(0, 3, 1, 2)
    else:
        raw = Path(root) / cls.__name__ / "raw"
        names = [Path(n).stem for n, _ in cls.resources]
        checksum = {
            "algorithm": "md5",
            "files": {f"{cls.__name__}/raw/{n}": file_digest(raw / n, "md5") for n in names},
            "verified": "computed here; torchvision checks md5s only of the downloaded .gz files",
        }
        tr, te = train.data.unsqueeze(1), test.data.unsqueeze(1)
    return {
        "train": ArraySource(tr, name=f"{dataset} train"),
        "test": ArraySource(te, name=f"{dataset} test"),
        "train_targets": np.asarray(train.targets, dtype=np.int64),
        "test_targets": np.asarray(test.targets, dtype=np.int64),
        "checksum": checksum,
    }


class SplitSource:
    """Routes ``("train", i)`` / ``("test", i)`` keys to the two array sources."""

    def __init__(self, train: ArraySource, test: ArraySource) -> None:
        self.parts = {"train": train, "test": test}

    def image(self, key: tuple[str, int]) -> torch.Tensor:
        return self.parts[key[0]].image(key[1])

    def mask(self, key: tuple[str, int]) -> None:
        return None

    def describe(self, key: tuple[str, int]) -> str:
        return self.parts[key[0]].describe(key[1])


def build_lsa(dataset: str, class_index: int, root: Path, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Records of the LSA protocol for a torchvision dataset."""
    d = load_arrays(dataset, root, download=bool(params["download"]))
    normal = np.flatnonzero(d["train_targets"] == class_index).tolist()
    keep, val = holdout_split(normal, params["holdout_fraction"], seed)
    train = [Record(f"train/{i:05d}", 0, ("train", i)) for i in keep]
    val_r = [Record(f"train/{i:05d}", 0, ("train", i)) for i in val] or None
    test = [Record(f"test/{i:05d}", int(t != class_index), ("test", i)) for i, t in enumerate(d["test_targets"])]
    layout = f"<root>/{CIFAR10.base_folder}" if dataset == "cifar10" else f"<root>/{TV_CLASS[dataset].__name__}/raw"
    return {
        "source": SplitSource(d["train"], d["test"]),
        "train": train,
        "val": val_r,
        "test": test,
        "has_masks": False,
        "checksum": d["checksum"],
        "info": {"layout": layout, "n_train_split": int(len(d["train_targets"]))},
    }


def remote_files(dataset: str) -> tuple[str, list[RemoteFile]]:
    """The published files of a torchvision dataset and the folder (relative to the data root) they go in.

    Read from torchvision's own tables (URLs, mirrors, md5s) at call time: CIFAR-10's python-version
    archive (extracted to ``cifar-10-batches-py/``), or the MNIST family's four ``.gz`` files (in
    ``<Name>/raw/``, unpacked beside themselves).
    """
    if dataset == "cifar10":
        return "", [RemoteFile(url=CIFAR10.url, filename=CIFAR10.filename, sha256=None, md5=CIFAR10.tgz_md5,
                               folder=CIFAR10.base_folder)]
    cls = TV_CLASS[dataset]
    return f"{cls.__name__}/raw", [
        RemoteFile(url=f"{cls.mirrors[0]}{name}", filename=name, sha256=None, md5=md5,
                   mirrors=tuple(f"{m}{name}" for m in cls.mirrors[1:]))
        for name, md5 in cls.resources
    ]


def _cifar_complete(folder: Path) -> Path | None:
    entries = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return folder if all(check_integrity(str(folder / n), m) for n, m in entries) else None


def _gunzip(archive: Path, target: Path) -> None:
    """Unpack a verified ``.gz`` to ``target`` through a temporary name: a half-written file never has the final name."""
    tmp = target.with_name(f"{target.name}.part-{os.getpid()}")
    try:
        with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download(dataset: str, root: Path) -> Path:
    """Fetch a torchvision dataset into ``root`` and check it; return the dataset folder.

    Each published file is downloaded to ``<name>.part`` (torchvision's ``download_url``, with a
    progress bar), its md5 checked against torchvision's table, then renamed; a file already placed by
    hand is checked instead of downloaded. CIFAR-10's archive is then extracted safely (staging folder,
    no links or paths outside it); the MNIST family's ``.gz`` files are unpacked through temporary names.
    What is already complete is left alone.
    """
    root = Path(root)
    sub, remotes = remote_files(dataset)
    if dataset == "cifar10":
        folder = root / CIFAR10.base_folder
        locate_or_extract(root, remotes[0], lambda: _cifar_complete(folder),
                          lambda: str(_not_found("cifar10", root, f"{folder} is incomplete")), "CIFAR-10 batch files",
                          download=True)
        return folder
    raw = root / sub
    for remote in remotes:
        target = raw / Path(remote.filename).stem
        if target.is_file():
            continue
        archive = raw / remote.filename
        if archive.is_file():
            verify(archive, remote)  # placed by hand (or kept from an earlier download)
        else:
            raw.mkdir(parents=True, exist_ok=True)
            archive = fetch(remote, raw)
        _gunzip(archive, target)
    load_arrays(dataset, root)  # the unpacked files parse
    return raw.parent


_download = download  # for load_arrays, whose parameter ``download`` hides the function's name
