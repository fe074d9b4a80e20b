"""Shared pieces of the data package: data root, item sources, the Dataset class, OneClassTask, checksums."""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from piade_lib.data.errors import (
    MaskPairingError,
    ProtocolParameterError,
    UnknownClassError,
    UnknownProtocolError,
)
from piade_lib.data.transforms import load_image, load_mask
from piade_lib.presets import SEED_MAX

ENV_VAR = "PIADE_DATA"
DEFAULT_DATA_DIR = "data"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$PIADE_DATA``, else ``./data`` (relative to the current directory)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DATA_DIR)


def how_to_point_at_data(root: Path) -> str:
    """The sentence every 'not found' message ends with."""
    return (
        f"Looked under data root {root}. Point the loader at your data with the root= argument (piade: "
        f"--data-root), or set the {ENV_VAR} environment variable; without either the data root is ./data "
        f"relative to the current directory. See docs/datasets.md."
    )


# --------------------------------------------------------------------------------------- records, sources
@dataclass(frozen=True)
class Record:
    """One item of a split: its stable id, its label (0 normal, 1 anomalous) and the key its source knows it by."""

    id: str
    label: int
    key: Any


class Source(Protocol):
    """Where the raw pixels of records come from."""

    def image(self, key: Any) -> torch.Tensor:  # raw (C,H,W), uint8 or float in [0,1]
        ...

    def mask(self, key: Any) -> torch.Tensor | None:  # raw (1,H,W) {0,1}, or None when the item has no mask
        ...

    def describe(self, key: Any) -> str:  # for error messages
        ...


class ArraySource:
    """Images (and optional masks) held in memory as tensors (N,C,H,W) (uint8, or float in [0,1])."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor | None = None, name: str = "array") -> None:
        if images.ndim == 3:
            images = images.unsqueeze(1)
        self.images = images
        self.masks = masks
        self.name = name

    def image(self, key: int) -> torch.Tensor:
        return self.images[key]

    def mask(self, key: int) -> torch.Tensor | None:
        return None if self.masks is None else self.masks[key]

    def describe(self, key: int) -> str:
        return f"{self.name}[{key}]"


class FileSource:
    """Images read from files under ``base``; keys are ``(image relpath, mask relpath or None)``.

    ``fix``: how to repair a file that fails validation (None: the published datasets' advice, re-extract or
    re-download); the ``folder`` dataset of the user's own images sets its own.
    """

    def __init__(self, base: Path, fix: str | None = None) -> None:
        self.base = Path(base)
        self.fix = fix

    def image(self, key: tuple[str, str | None]) -> torch.Tensor:
        return load_image(self.base / key[0])

    def mask(self, key: tuple[str, str | None]) -> torch.Tensor | None:
        if key[1] is None:
            return None
        return load_mask(self.base / key[1])

    def describe(self, key: tuple[str, str | None]) -> str:
        return str(self.base / key[0]) + (f" (mask {self.base / key[1]})" if key[1] else "")


class ImageDataset(Dataset):
    """A split of a one-class task. Items: ``{"image": (3,S,S) [0,1], "label": int, "mask": (1,S,S) {0,1}, "id": str}``.

    Preprocessed items are cached in memory after their first use (``cache=False`` to turn off);
    :meth:`preload` fills the cache up front, :func:`piade_lib.data.validate_split` fills it while
    checking every item. ``has_masks``: the dataset has pixel masks (every anomalous item needs one).
    """

    def __init__(
        self,
        records: Sequence[Record],
        source: Source,
        image_tf: Callable[[Any], torch.Tensor],
        mask_tf: Callable[[Any], torch.Tensor],
        image_size: int,
        cache: bool = True,
        has_masks: bool = False,
    ) -> None:
        self.records = list(records)
        self.source = source
        self.image_tf = image_tf
        self.mask_tf = mask_tf
        self.image_size = int(image_size)
        self.cache = cache
        self.has_masks = bool(has_masks)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        rec = self.records[index]
        raw = self.source.image(rec.key)
        raw_mask = self.source.mask(rec.key)
        if raw_mask is not None and tuple(raw_mask.shape[-2:]) != tuple(raw.shape[-2:]):
            sizes = f"image {tuple(raw.shape[-2:])}, mask {tuple(raw_mask.shape[-2:])}"
            err = MaskPairingError(
                f"mask and image sizes differ for {self.source.describe(rec.key)}: {sizes}. "
                f"A mask must have its image's size."
            )
            err.reason = f"mask and image sizes differ: {sizes}"
            raise err
        image = self.image_tf(raw)
        mask = None if raw_mask is None else self.mask_tf(raw_mask)
        return image, mask

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from (its file(s), or array and position), for messages."""
        return self.source.describe(self.records[index].key)

    def load_cached(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The preprocessed ``(image, mask or None)`` of item ``index``, from the cache or decoded now (and
        cached). The tensors are the cached ones, not copies: do not modify them."""
        hit = self._cache.get(index)
        if hit is None:
            hit = self._load(index)
            if self.cache:
                self._cache[index] = hit
        return hit

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} items")
        image, mask = self.load_cached(index)
        if mask is None:
            mask = torch.zeros(1, self.image_size, self.image_size)
        rec = self.records[index]
        return {"image": image.clone(), "label": int(rec.label), "mask": mask.clone(), "id": rec.id}

    def preload(self, num_threads: int | None = None) -> ImageDataset:
        """Decode and preprocess every item now, in threads (fills the cache); returns self.

        Call it before wrapping the split in a DataLoader with worker processes, so that the workers
        inherit the cache instead of each decoding the files again every epoch.
        """
        todo = [i for i in range(len(self)) if i not in self._cache]
        workers = num_threads or min(8, os.cpu_count() or 1)
        if workers <= 1 or len(todo) < 2:
            loaded = [self._load(i) for i in todo]
        else:
            with ThreadPoolExecutor(workers) as pool:
                loaded = list(pool.map(self._load, todo))
        if self.cache:
            self._cache.update(zip(todo, loaded))
        return self

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images stacked ``(N,3,S,S)`` and labels ``(N,)`` (handy for baselines)."""
        if len(self) == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size), torch.zeros(0, dtype=torch.long)
        items = [self[i] for i in range(len(self))]
        return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])


# --------------------------------------------------------------------------------------------- the task
@dataclass
class OneClassTask:
    """A one-class problem: ``train`` (normal images only), ``test`` (labels 1 = anomalous), optional ``val``."""

    dataset: str
    normal_class: str
    protocol: str
    seed: int
    image_size: int
    preset: str
    train: ImageDataset
    test: ImageDataset
    has_masks: bool
    manifest: dict[str, Any]
    val: ImageDataset | None = None
    warnings: list[str] = field(default_factory=list)

    def write_manifest(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest as JSON (atomically; parent folders created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------------- argument checks
def resolve_class(dataset: str, normal_class: Any, valid: Sequence[str]) -> tuple[str, int]:
    """Class name and index from a name or an index into ``valid``."""
    if isinstance(normal_class, (int, np.integer)) and not isinstance(normal_class, bool):
        i = int(normal_class)
        if 0 <= i < len(valid):
            return valid[i], i
        raise UnknownClassError(
            f"class index {i} is out of range for {dataset!r} ({len(valid)} classes: 0..{len(valid) - 1}); "
            f"valid classes: {list(valid)}"
        )
    if isinstance(normal_class, str) and normal_class in valid:
        return normal_class, list(valid).index(normal_class)
    raise UnknownClassError(
        f"unknown class {normal_class!r} for dataset {dataset!r}; valid classes (names, or their index): {list(valid)}"
    )


def resolve_params(
    dataset: str, protocol: str, given: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Protocol parameters: defaults updated with ``given``; unknown names raise with the valid ones.

    The fractions (:data:`FRACTION_PARAMS`) and the true/false parameters given are checked here, so that a
    bad value is refused (:class:`ProtocolParameterError`) before any data is read.
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UnknownProtocolError(
            f"unknown parameter(s) {unknown} for dataset {dataset!r}, protocol {protocol!r}; "
            f"valid parameters and defaults: {dict(defaults)}"
        )
    for name, value in given.items():
        if name in FRACTION_PARAMS:
            check_fraction(name, value, *FRACTION_PARAMS[name])
        elif isinstance(defaults[name], bool):
            check_flag(name, value, example=not defaults[name])
    return {**defaults, **given}


# the protocol parameters that are fractions: name -> (low end open, high end open)
FRACTION_PARAMS: dict[str, tuple[bool, bool]] = {
    "test_fraction": (True, True),
    "train_fraction": (True, True),
    "outlier_fraction": (True, True),
    "holdout_fraction": (False, True),
}


def bad_param(name: str, value: Any, want: str, example: Any, cli: str | None = None) -> ProtocolParameterError:
    """The error for protocol parameter ``name`` given ``value``: what it must be (``want``), a valid value
    (``example``) and how to give it with ``piade train`` (``cli``; default ``--param name=<example as JSON>``)."""
    shown = "None (null, or a non-finite number such as NaN)" if value is None else repr(value)
    cli = cli or f"--param {name}={json.dumps(example)}"
    return ProtocolParameterError(
        f"protocol parameter {name}={shown} is not valid: give {want}, e.g. {name}={example!r} (piade: {cli})"
    )


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_fraction(name: str, value: float, low_open: bool = False, high_open: bool = True) -> float:
    """A fraction in [0,1) (or (0,1) with ``low_open``), else :class:`ProtocolParameterError` (a ValueError)
    naming the parameter, the value and the range; NaN, inf, None, strings and booleans are refused."""
    ok = _is_real(value)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)  # False for NaN
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise bad_param(name, value, f"a finite number in {lo}0, 1{hi}", 0.5)
    return v


def check_int(
    name: str, value: Any, low: int, high: int | None = None, note: str = "", example: int | None = None
) -> int:
    """An integer >= ``low`` (and <= ``high``), else :class:`ProtocolParameterError`; floats (even 4.0),
    strings and booleans are refused rather than truncated or converted."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not ok or value < low or (high is not None and value > high):
        want = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise bad_param(name, value, want + (f" ({note})" if note else ""), low if example is None else example)
    return int(value)


def check_flag(name: str, value: Any, example: bool = True) -> bool:
    """True or False, else :class:`ProtocolParameterError` (a string such as "no" would otherwise count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise bad_param(name, value, "True or False", bool(example))
    return bool(value)


def check_seed(seed: Any) -> int:
    """A seed in [0, 2**32 - 1], else :class:`ProtocolParameterError` naming the range."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, (bool, np.bool_)) or not 0 <= seed <= SEED_MAX:
        raise ProtocolParameterError(
            f"seed={seed!r} is not valid: give an integer in [0, {SEED_MAX}], e.g. seed=0 (piade: --seed 0)"
        )
    return int(seed)


def holdout_split(indices: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``indices`` into (kept, held out); a seeded ``round(fraction * n)`` are held out. Both sorted."""
    idx = np.asarray(sorted(indices))
    n_val = int(round(check_fraction("holdout_fraction", fraction) * len(idx)))
    if n_val == 0:
        return idx.tolist(), []
    perm = np.random.default_rng(seed).permutation(len(idx))
    val = np.sort(idx[perm[:n_val]])
    keep = np.sort(idx[perm[n_val:]])
    return keep.tolist(), val.tolist()


def n_outliers(n_inliers: int, outlier_fraction: float) -> int:
    """Outliers to add to ``n_inliers`` so that outliers make up ``outlier_fraction`` of the test set."""
    f = check_fraction("outlier_fraction", outlier_fraction, low_open=True)
    return int(round(n_inliers * f / (1.0 - f)))


# ------------------------------------------------------------------------------------------- checksums
_FILE_HASH_CACHE: dict[tuple[str, int, int, str], str] = {}


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (cached in-process by path, size and modification time)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, algorithm)
    hit = _FILE_HASH_CACHE.get(key)
    if hit is None:
        h = hashlib.new(algorithm)
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        hit = _FILE_HASH_CACHE[key] = h.hexdigest()
    return hit


def tree_sha256(base: Path, relpaths: Iterable[str]) -> str:
    """One sha256 over files: sha256 of the sorted lines ``<relpath> <sha256 of the file>``."""
    h = hashlib.sha256()
    for rel in sorted(set(relpaths)):
        h.update(f"{rel} {file_digest(Path(base) / rel)}\n".encode())
    return h.hexdigest()


def arrays_sha256(*arrays: np.ndarray | torch.Tensor) -> str:
    """sha256 over the bytes (and shapes and dtypes) of arrays."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
