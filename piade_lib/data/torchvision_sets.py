"""CIFAR-10, MNIST and Fashion-MNIST through torchvision's dataset classes, under the LSA one-class protocol.

LSA protocol (Abati et al., CVPR 2019; PIADE Table 2): train = the normal class's train images,
test = the whole test split (normal class -> label 0, the nine others -> label 1). With
``holdout_fraction > 0`` a seeded share of the normal train images is held out as ``val`` (for
score normalisation); the training set is then the rest.

torchvision checks: CIFAR10 verifies the md5 of every batch file even with ``download=False``;
MNIST/FashionMNIST only check that the four uncompressed ``raw/`` files exist (md5s are checked on
the downloaded ``.gz`` archives). So before torchvision reads them, :func:`check_idx_files` checks
every raw file against :func:`official_idx_files` (one table: torchvision's ``.gz`` names and md5s
plus the item counts and md5s of the unpacked files): its IDX header and size (a truncated file,
or 50 images with 40 labels, is refused with the file, the expected and the found count), then its
md5 (cached per path, size and modification time). ``verify_checksums=False`` (a protocol
parameter) accepts well-formed IDX files that are not the official release; their structure is
still checked. The manifest records the md5s of the raw files either way.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5, check_integrity

from piade_lib.data.archives import RemoteFile, fetch, locate_or_extract, verify
from piade_lib.data.base import ArraySource, Record, file_digest, holdout_split, how_to_point_at_data
from piade_lib.data.errors import (
    ChecksumMismatchError,
    CorruptImageError,
    DatasetDownloadError,
    DatasetNotFoundError,
    UnverifiedDataWarning,
)

CLASSES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "mnist": tuple(str(i) for i in range(10)),
    # torchvision's names ("T-shirt/top", ...) made safe for folder names
    "fashion_mnist": (
        "tshirt_top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle_boot",
    ),
}
TV_CLASS = {"cifar10": CIFAR10, "mnist": MNIST, "fashion_mnist": FashionMNIST}
LSA_DEFAULTS: dict[str, Any] = {"holdout_fraction": 0.0, "download": False}
# The MNIST family also takes verify_checksums (True: the raw files must be the official release).
IDX_LSA_DEFAULTS: dict[str, Any] = {**LSA_DEFAULTS, "verify_checksums": True}

# ------------------------------------------------------------------------ the MNIST family's raw files
# Items in, and md5 of, each official *unpacked* file (the published md5s, torchvision's, are those of
# the .gz archives; these are the md5s of their content). :func:`official_idx_files` joins the two.
IDX_OFFICIAL: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte": (60_000, "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte": (60_000, "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte": (10_000, "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte": (10_000, "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": (60_000, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train-labels-idx1-ubyte": (60_000, "9018921c3c673c538a1fc5bad174d6f9"),
        "t10k-images-idx3-ubyte": (10_000, "8181f5470baa50b63fa0f6fddb340f0a"),
        "t10k-labels-idx1-ubyte": (10_000, "15d484375f8d13e6eb1aabb0c3f46965"),
    },
}
IDX_SIDE = 28  # MNIST and Fashion-MNIST images are 28x28
IDX_MAGIC = {"images": 2051, "labels": 2049}
IDX_HEADER = {"images": 16, "labels": 8}


@dataclass(frozen=True)
class IdxFile:
    """One official raw file of the MNIST family: its name, the published ``.gz`` and what it holds."""

    name: str  # in <root>/<Name>/raw/
    kind: str  # "images" or "labels"
    count: int  # items in the official file
    md5: str  # md5 of the official unpacked file
    gz: str  # the published archive's name
    gz_md5: str  # its md5 (torchvision's table)

    @property
    def size(self) -> int:
        """Bytes of the official unpacked file."""
        return idx_size(self.kind, self.count)


def idx_size(kind: str, count: int) -> int:
    """Bytes of an IDX file of ``count`` 28x28 images or ``count`` labels."""
    return IDX_HEADER[kind] + count * (IDX_SIDE * IDX_SIDE if kind == "images" else 1)


def official_idx_files(dataset: str) -> list[IdxFile]:
    """The four official raw files of ``mnist`` / ``fashion_mnist``, in torchvision's order (train images,
    train labels, test images, test labels): names, counts and md5s of the unpacked files with the
    ``.gz`` names and md5s of torchvision's table (read at call time, like the download)."""
    table = IDX_OFFICIAL[dataset]
    out = []
    for gz, gz_md5 in TV_CLASS[dataset].resources:
        name = Path(gz).stem
        count, md5 = table[name]
        out.append(IdxFile(name, "images" if "-images-" in name else "labels", count, md5, gz, gz_md5))
    return out


_GZ_CONTENT_MD5: dict[tuple[str, int, int], str] = {}


def _gz_content_md5(gz: Path) -> str:
    """md5 of the unpacked content of ``gz`` (cached per path, size and modification time)."""
    st = gz.stat()
    key = (str(gz.resolve()), st.st_size, st.st_mtime_ns)
    hit = _GZ_CONTENT_MD5.get(key)
    if hit is None:
        h = hashlib.md5()
        with gzip.open(gz, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        hit = _GZ_CONTENT_MD5[key] = h.hexdigest()
    return hit


def _idx_fix(dataset: str, root: Path) -> str:
    return (
        f"Delete it and run `piade download {dataset} --root {root}` (it fetches the official files, checks "
        f"their md5s and unpacks them; .gz files already in the folder are checked and reused)."
    )


def _read_idx_count(path: Path, kind: str, dataset: str, root: Path) -> int:
    """Items in an IDX file, after checking its magic number, image size and that its size matches its header."""
    size = path.stat().st_size
    n_header = IDX_HEADER[kind]
    fix = _idx_fix(dataset, root)
    with open(path, "rb") as f:
        head = f.read(n_header)
    if len(head) < n_header:
        raise CorruptImageError(path, f"{size} bytes, too short for an IDX {kind} header ({n_header} bytes)", fix=fix)
    magic, count = struct.unpack(">II", head[:8])
    if magic != IDX_MAGIC[kind]:
        raise CorruptImageError(
            path,
            f"not an IDX {kind} file: magic number {magic}, expected {IDX_MAGIC[kind]}"
            + (" (it is gzip-compressed: unpack it, or name it *.gz)" if head[:2] == b"\x1f\x8b" else ""),
            fix=fix,
        )
    if kind == "images":
        rows, cols = struct.unpack(">II", head[8:16])
        if (rows, cols) != (IDX_SIDE, IDX_SIDE):
            raise CorruptImageError(path, f"images of {rows}x{cols} pixels, expected {IDX_SIDE}x{IDX_SIDE}", fix=fix)
    want = idx_size(kind, count)
    if size != want:
        per = IDX_SIDE * IDX_SIDE if kind == "images" else 1
        whole = max(0, size - n_header) // per
        state = "truncated" if size < want else "longer than its header says"
        raise CorruptImageError(
            path,
            f"{state}: its header announces {count:,} {kind} ({want:,} bytes), the file has {size:,} bytes "
            f"({whole:,} complete {kind})",
            fix=fix,
        )
    return count


def _check_idx_structure(dataset: str, root: Path, raw: Path, official: list[IdxFile]) -> dict[str, int]:
    """Items per raw file, after checking each file's IDX structure, one label per image and labels 0-9."""
    fix = _idx_fix(dataset, root)
    counts: dict[str, int] = {}
    for f in official:
        counts[f.name] = _read_idx_count(raw / f.name, f.kind, dataset, root)
    for split in ("train", "t10k"):
        img, lab = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if counts[img] != counts[lab]:
            n_off = IDX_OFFICIAL[dataset][img][0]
            raise CorruptImageError(
                raw / lab,
                f"holds {counts[lab]:,} labels but {raw / img} holds {counts[img]:,} images: expected one "
                f"label per image ({n_off:,} of each in the official files)",
                fix=fix,
            )
        labels = np.fromfile(raw / lab, dtype=np.uint8, offset=IDX_HEADER["labels"])
        if labels.size and int(labels.max()) > 9:
            bad = int(np.flatnonzero(labels > 9)[0])
            raise CorruptImageError(raw / lab, f"label {int(labels[bad])} at position {bad:,}; labels are 0-9", fix=fix)
    return counts


def _match_official(
    raw: Path, official: list[IdxFile], counts: dict[str, int], md5s: dict[str, str]
) -> tuple[dict[str, str], list[IdxFile]]:
    """How each official raw file was recognised (by name), and the files that are not the official ones."""
    how: dict[str, str] = {}
    mismatches: list[IdxFile] = []
    for f in official:
        if counts[f.name] == f.count and md5s[f.name] == f.md5:
            how[f.name] = "official md5"
        elif (
            (raw / f.gz).is_file()
            and file_digest(raw / f.gz, "md5") == f.gz_md5
            and _gz_content_md5(raw / f.gz) == md5s[f.name]
        ):
            how[f.name] = f"unpacked from {f.gz}, md5 as torchvision's table"
        else:
            mismatches.append(f)
    return how, mismatches


def _not_official(cls_name: str, raw: Path, f: IdxFile, count: int, md5: str, fix: str) -> ChecksumMismatchError:
    """The error for a raw file that is not the official one (noting a ``.gz`` beside it that does not match)."""
    path = raw / f.name
    gz_note = ""
    if (raw / f.gz).is_file():
        gz_note = f"{raw / f.gz} is there too but " + (
            "its md5 is not torchvision's. "
            if file_digest(raw / f.gz, "md5") != f.gz_md5
            else "unpacks to other bytes. "
        )
    return ChecksumMismatchError(
        path,
        f"{f.md5} (the official file: {f.count:,} {f.kind}, {f.size:,} bytes)",
        f"{md5} ({count:,} {f.kind}, {path.stat().st_size:,} bytes)",
        algorithm="md5",
        fix=f"It is not the official {cls_name} file (another version, or damaged). {gz_note}{fix} "
        f"To use IDX files of your own, pass verify_checksums=False (piade: --param verify_checksums=false; "
        f"their structure is still checked).",
    )


def _verification_text(how: dict[str, str], mismatches: list[IdxFile]) -> str:
    """The recorded sentence on how the raw files were verified."""
    if mismatches:
        return (
            f"skipped (verify_checksums=False): {', '.join(f.name for f in mismatches)} "
            f"{'is' if len(mismatches) == 1 else 'are'} not the official file(s); the IDX structure was checked"
        )
    if all(h == "official md5" for h in how.values()):
        return "official: the item counts and md5s of the four unpacked files match the official release"
    return "official: " + "; ".join(f"{n}: {h}" for n, h in how.items())


def check_idx_files(dataset: str, root: Path, verify_checksums: bool = True) -> dict[str, Any]:
    """Check the four raw IDX files of ``mnist`` / ``fashion_mnist`` under ``root`` before they are parsed.

    Always: each file's IDX header (magic number, 28x28 images), that its size is what its header
    announces (a truncated file is refused with the expected and the found count), as many labels as
    images, labels 0-9. With ``verify_checksums`` (the default) each file must also be the official one:
    the official item count (60,000 train / 10,000 test) and md5, or the exact content of a ``.gz``
    beside it whose md5 is torchvision's. md5s are cached per path, size and modification time, so a
    process computes the md5 of the 47 MB training images once. Raises :class:`CorruptImageError` or
    :class:`ChecksumMismatchError`, one line naming the file, the expected and the found value, and the fix.
    Returns ``{"files": {relpath: md5}, "official": bool, "verification": str}``.
    """
    cls = TV_CLASS[dataset]
    raw = Path(root) / cls.__name__ / "raw"
    official = official_idx_files(dataset)
    counts = _check_idx_structure(dataset, root, raw, official)
    md5s = {f.name: file_digest(raw / f.name, "md5") for f in official}
    how, mismatches = _match_official(raw, official, counts, md5s)
    if mismatches and verify_checksums:
        f = mismatches[0]
        raise _not_official(cls.__name__, raw, f, counts[f.name], md5s[f.name], _idx_fix(dataset, root))
    if mismatches:
        # stacklevel: check_idx_files <- load_arrays <- build_lsa <- lambda <- _build_records <- one_class_task
        warnings.warn(
            f"{dataset}: {', '.join(str(raw / f.name) for f in mismatches)} "
            f"{'is' if len(mismatches) == 1 else 'are'} not the official {cls.__name__} release "
            "(verify_checksums=False): "
            f"numbers on this data are not comparable with published results.",
            UnverifiedDataWarning,
            stacklevel=7,
        )
    return {
        "files": {f"{cls.__name__}/raw/{n}": m for n, m in md5s.items()},
        "official": not mismatches,
        "verification": _verification_text(how, mismatches),
        "counts": counts,
    }


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
        f"one_class_task(..., download=True), piade train's --param download=true; the md5s are checked), or "
        f"place the files by hand. " + how_to_point_at_data(root)
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


def _open_torchvision(dataset: str, root: Path, download: bool) -> tuple[Any, Any]:
    """torchvision's train and test datasets, its failures turned into this package's errors."""
    cls = TV_CLASS[dataset]
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
    return train, test


def _images_and_checksum(
    dataset: str, train: Any, test: Any, idx_check: dict[str, Any] | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Train and test images as uint8 (N, C, H, W) tensors, and the checksum record of the files they came from."""
    if dataset == "cifar10":
        entries = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        checksum = {
            "algorithm": "md5",
            "files": {f"{CIFAR10.base_folder}/{n}": m for n, m in entries},
            "verified": "by torchvision CIFAR10 against its md5 table",
        }
        tr = torch.from_numpy(np.asarray(train.data)).permute(0, 3, 1, 2)
        te = torch.from_numpy(np.asarray(test.data)).permute(0, 3, 1, 2)
        return tr, te, checksum
    assert idx_check is not None  # torchvision found the four files, so they were checked above
    # unchanged record (resuming a run compares it with the run's manifest); the verification
    # itself is recorded in the manifest's "source"
    checksum = {
        "algorithm": "md5",
        "files": idx_check["files"],
        "verified": "computed here; torchvision checks md5s only of the downloaded .gz files",
    }
    return train.data.unsqueeze(1), test.data.unsqueeze(1), checksum


def load_arrays(dataset: str, root: Path, download: bool = False, verify_checksums: bool = True) -> dict[str, Any]:
    """Train/test uint8 arrays and targets of a torchvision dataset, with the checksum record.

    For the MNIST family the raw files are checked first (:func:`check_idx_files`), so a damaged file
    is refused with its name instead of failing inside torchvision's parser.
    """
    cls = TV_CLASS[dataset]
    if download:
        _download(dataset, Path(root))
    idx_check = None
    if dataset != "cifar10":
        raw = Path(root) / cls.__name__ / "raw"
        if all((raw / f.name).is_file() for f in official_idx_files(dataset)):  # missing files: reported below
            idx_check = check_idx_files(dataset, Path(root), verify_checksums=verify_checksums)
    train, test = _open_torchvision(dataset, root, download)
    tr, te, checksum = _images_and_checksum(dataset, train, test, idx_check)
    return {
        "train": ArraySource(tr, name=f"{dataset} train"),
        "test": ArraySource(te, name=f"{dataset} test"),
        "train_targets": np.asarray(train.targets, dtype=np.int64),
        "test_targets": np.asarray(test.targets, dtype=np.int64),
        "checksum": checksum,
        "verification": None if idx_check is None else idx_check["verification"],
        "official": True if idx_check is None else idx_check["official"],
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
    d = load_arrays(
        dataset, root, download=bool(params["download"]), verify_checksums=bool(params.get("verify_checksums", True))
    )
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
        "info": {
            "layout": layout,
            "n_train_split": int(len(d["train_targets"])),
            **(
                {"verification": d["verification"], "official_files": d["official"]}
                if d["verification"] is not None
                else {}
            ),
        },
        "warnings": []
        if d["official"]
        else [
            f"{dataset}: the raw files are not the official release (verify_checksums=False); see source.verification"
        ],
    }


def remote_files(dataset: str) -> tuple[str, list[RemoteFile]]:
    """The published files of a torchvision dataset and the folder (relative to the data root) they go in.

    Read from torchvision's own tables (URLs, mirrors, md5s) at call time: CIFAR-10's python-version
    archive (extracted to ``cifar-10-batches-py/``), or the MNIST family's four ``.gz`` files (in
    ``<Name>/raw/``, unpacked beside themselves).
    """
    if dataset == "cifar10":
        return "", [
            RemoteFile(
                url=CIFAR10.url, filename=CIFAR10.filename, sha256=None, md5=CIFAR10.tgz_md5, folder=CIFAR10.base_folder
            )
        ]
    cls = TV_CLASS[dataset]
    return f"{cls.__name__}/raw", [
        RemoteFile(
            url=f"{cls.mirrors[0]}{f.gz}",
            filename=f.gz,
            sha256=None,
            md5=f.gz_md5,
            mirrors=tuple(f"{m}{f.gz}" for m in cls.mirrors[1:]),
        )
        for f in official_idx_files(dataset)
    ]


def _cifar_complete(folder: Path) -> Path | None:
    entries = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return folder if all(check_integrity(str(folder / n), m) for n, m in entries) else None


def _gunzip(archive: Path, target: Path) -> None:
    """Unpack a verified ``.gz`` to ``target`` through a temporary name.

    A half-written file never has the final name."""
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
        locate_or_extract(
            root,
            remotes[0],
            lambda: _cifar_complete(folder),
            lambda: str(_not_found("cifar10", root, f"{folder} is incomplete")),
            "CIFAR-10 batch files",
            download=True,
        )
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
