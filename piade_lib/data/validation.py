"""Check every item of a split once, before training: :func:`validate_split`.

A one-class task is built from file names (and, for MNIST, checked raw files); its images are
decoded only when training reads them. :func:`validate_split` decodes each item of a split once,
through the split's own loading path (so :class:`~piade_lib.data.base.ImageDataset`'s in-memory
cache ends up filled exactly as the first epoch would fill it, and nothing is copied), and checks
what training and evaluation rely on:

* the image is a float tensor ``(3, S, S)`` with finite values in [0, 1] (``S``: the split's image size);
* the label is 0 (normal) or 1 (anomalous);
* a mask, where there is one, is ``(1, S, S)`` with values in {0, 1}, and its file has its image's size;
* in a dataset with masks (MVTec AD, textures, folders with ``ground_truth/``) every anomalous item has
  a mask; a normal item has none (or an all-zero one).

Every item is checked (a failure does not stop the check) and one
:class:`~piade_lib.data.errors.InvalidSplitError` names the split, how many items failed and the first
few files with the reason of each. Works on a split, on a ``torch.utils.data.Subset`` of one (the
training code limits splits that way; only the subset's items are decoded), and on nested subsets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from piade_lib.data.base import FileSource, ImageDataset
from piade_lib.data.errors import CorruptImageError, InvalidSplitError

# Splits with more items than this get a progress bar when ``progress`` is None.
PROGRESS_MIN_ITEMS = 300
_REASON_CHARS = 300
_CHUNK = 8  # items per decoding task when threads are used


@dataclass(frozen=True)
class ItemFailure:
    """One item that failed: its position in the split that was checked, its id, its file(s), the reason."""

    position: int
    id: str
    where: str
    reason: str


@dataclass(frozen=True)
class SplitCheck:
    """What :func:`validate_split` checked: items, anomalous items, items with a non-empty mask, seconds taken."""

    split: str
    n_items: int
    n_anomalous: int
    n_masks: int
    seconds: float


def _unwrap(ds: Dataset) -> tuple[Dataset, list[int]]:
    """The innermost dataset under (nested) ``Subset``s and, per position of ``ds``, the index into it."""
    positions = list(range(len(ds)))  # type: ignore[arg-type]
    while isinstance(ds, Subset):
        positions = [int(ds.indices[p]) for p in positions]
        ds = ds.dataset
    return ds, positions


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _exception_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # the data errors' short form, without the file's path
    if isinstance(exc, CorruptImageError) and reason:
        return _one_line(f"unreadable ({reason})")
    if isinstance(reason, str) and reason:
        return _one_line(reason)
    return _one_line(f"{type(exc).__name__}: {exc}")


def check_item(image: Any, mask: Any, label: Any, image_size: int, has_masks: bool) -> list[str]:
    """The problems of one preprocessed item (empty when it is fine); ``mask`` may be None."""
    problems: list[str] = []
    s = int(image_size)
    if not (isinstance(label, (int, bool)) or (isinstance(label, torch.Tensor) and label.numel() == 1)) or int(
        label
    ) not in (0, 1):
        problems.append(f"label {label!r}, expected 0 (normal) or 1 (anomalous)")
        label = None
    else:
        label = int(label)
    if not isinstance(image, torch.Tensor):
        problems.append(f"image is a {type(image).__name__}, expected a float tensor (3, {s}, {s})")
    elif not image.is_floating_point():
        problems.append(f"image dtype {image.dtype}, expected a float tensor in [0, 1]")
    elif tuple(image.shape) != (3, s, s):
        problems.append(f"image shape {tuple(image.shape)}, expected (3, {s}, {s})")
    else:
        lo, hi = (float(v) for v in torch.aminmax(image))  # NaN propagates, inf is out of range
        if not (0.0 <= lo and hi <= 1.0):
            finite = torch.isfinite(image)
            if not bool(finite.all()):
                problems.append(f"image has {int((~finite).sum())} non-finite value(s) (NaN or inf)")
            else:
                problems.append(f"image values in [{lo:.4g}, {hi:.4g}], expected [0, 1]")
    empty_mask = True
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (1, s, s):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            problems.append(f"mask shape {shape}, expected (1, {s}, {s})")
        else:
            lo, hi = (float(v) for v in torch.aminmax(mask))
            if lo not in (0.0, 1.0) or hi not in (0.0, 1.0) or (hi > lo and bool(((mask != 0) & (mask != 1)).any())):
                problems.append("mask has values other than 0 and 1")
            else:
                empty_mask = hi == 0.0
    if label == 1 and has_masks and mask is None:
        problems.append("anomalous item without a mask (this dataset has masks: every anomalous image needs one)")
    if label == 0 and mask is not None and not empty_mask:
        problems.append(f"normal item with a non-empty mask ({int(mask.sum())} defect pixel(s))")
    return problems


def _workers(num_threads: int | None, n: int, decodes_files: bool) -> int:
    """Decoding threads: image files decode outside the GIL and gain from threads; in-memory arrays
    (MNIST, CIFAR-10, the stand-ins) are preprocessed by small torch ops that do not."""
    if num_threads is not None:
        return max(1, int(num_threads))
    if not decodes_files or n < 64:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


_Result = tuple[int, list[str], int, bool]  # position, problems, label, has a non-empty mask
_Check = Callable[[int], _Result]
_Locate = Callable[[int], tuple[str, str]]


def _image_dataset_checks(base: ImageDataset, indices: list[int], has_masks: bool) -> tuple[_Check, _Locate]:
    """Per-position check and locate for an ``ImageDataset``, decoding through its own cache."""
    size = base.image_size

    def check(pos: int) -> _Result:
        i = indices[pos]
        label = int(base.records[i].label)
        try:
            image, mask = base.load_cached(i)
        except Exception as exc:  # any failure to decode is this item's failure
            return pos, [_exception_reason(exc)], label, False
        problems = check_item(image, mask, label, size, has_masks)
        return pos, problems, label, mask is not None and not problems and bool(mask.any())

    def locate(pos: int) -> tuple[str, str]:
        i = indices[pos]
        return base.records[i].id, base.describe(i)

    return check, locate


def _generic_checks(dataset: Dataset, has_masks: bool) -> tuple[_Check, _Locate]:
    """Per-position check and locate for any other dataset, read through ``dataset[pos]``."""

    def check(pos: int) -> _Result:
        try:
            item = dataset[pos]
        except Exception as exc:
            return pos, [_exception_reason(exc)], 0, False
        if isinstance(item, dict):
            image, mask, label = item.get("image"), item.get("mask"), item.get("label", 0)
        else:
            image, mask, label = item[0], None, item[1] if len(item) > 1 else 0
        s = int(image.shape[-1]) if isinstance(image, torch.Tensor) and image.ndim else 0
        problems = check_item(image, mask, label, s, has_masks)
        lab = int(label) if not problems else 0
        return pos, problems, lab, isinstance(mask, torch.Tensor) and not problems and bool(mask.any())

    def locate(pos: int) -> tuple[str, str]:
        return str(pos), f"item {pos}"

    return check, locate


def _run_checks(check: _Check, n: int, todo: list[int], workers: int, bar: Any) -> list[_Result]:
    """Check every position: the cached ones here in order, then ``todo`` (in threads when ``workers`` > 1)."""
    results: list[_Result] = []
    todo_set = set(todo)
    for pos in range(n):  # already decoded (cached): checked here, in order
        if pos not in todo_set:
            results.append(check(pos))
            bar.update(1)
    if workers <= 1:
        for pos in todo:
            results.append(check(pos))
            bar.update(1)
    else:

        def run(chunk: list[int]) -> list[_Result]:
            return [check(pos) for pos in chunk]

        chunks = [todo[k : k + _CHUNK] for k in range(0, len(todo), _CHUNK)]
        with ThreadPoolExecutor(workers) as pool:
            for part in pool.map(run, chunks):
                results.extend(part)
                bar.update(len(part))
    results.sort(key=lambda r: r[0])
    return results


def _tally(results: list[_Result], locate: _Locate) -> tuple[list[ItemFailure], int, int]:
    """The failures, in order, and the anomalous items and non-empty masks among the items that passed."""
    failures: list[ItemFailure] = []
    n_anomalous = n_masks = 0
    for pos, problems, label, has_mask in results:
        if problems:
            item_id, where = locate(pos)
            failures.append(ItemFailure(pos, item_id, where, "; ".join(problems)))
        else:
            n_anomalous += int(label == 1)
            n_masks += int(has_mask)
    return failures, n_anomalous, n_masks


def validate_split(
    dataset: Dataset,
    split_name: str = "split",
    progress: bool | None = None,
    num_threads: int | None = None,
    max_listed: int = 5,
) -> SplitCheck:
    """Decode every item of ``dataset`` once and check it; raise one error listing every failure.

    ``dataset``: a split of a task (:class:`~piade_lib.data.base.ImageDataset`), a (nested)
    ``Subset`` of one, or any dataset whose items are dicts with ``image``, ``label`` and optionally
    ``mask`` (checked through ``dataset[i]``). Items of an ``ImageDataset`` are decoded through its
    own cached loading path (:meth:`ImageDataset.load_cached`): the cache is filled as training would
    fill it, and no copy is made. ``split_name`` names the split in messages. ``progress``: a tqdm
    bar (None: when there are more than ``PROGRESS_MIN_ITEMS`` items). ``num_threads``: decoding
    threads (None: up to 8, one per available core; 1 below 64 items). ``max_listed``: failures
    spelled out in the error's message (all of them are in its ``failures``).

    Returns a :class:`SplitCheck`; raises :class:`~piade_lib.data.errors.InvalidSplitError` (its
    ``failures``: every :class:`ItemFailure`) when any item fails.
    """
    t0 = time.perf_counter()
    base, indices = _unwrap(dataset)
    n = len(indices)
    has_masks = bool(getattr(base, "has_masks", False))

    if isinstance(base, ImageDataset):
        check, locate = _image_dataset_checks(base, indices, has_masks)
        decodes_files = isinstance(base.source, FileSource)
        todo = [pos for pos in range(n) if indices[pos] not in base._cache]  # the rest is only checked
    else:
        check, locate = _generic_checks(dataset, has_masks)
        decodes_files, todo = False, list(range(n))

    show = (n > PROGRESS_MIN_ITEMS) if progress is None else bool(progress)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=f"checking {split_name}", unit="img", leave=False, disable=not show)
    workers = _workers(num_threads, len(todo), decodes_files)
    try:
        results = _run_checks(check, n, todo, workers, bar)
    finally:
        bar.close()

    failures, n_anomalous, n_masks = _tally(results, locate)
    if failures:
        fix = getattr(getattr(base, "source", None), "fix", None)  # e.g. the folder dataset's own advice
        raise InvalidSplitError(split_name, n, failures, shown=max_listed, fix=fix)
    return SplitCheck(split_name, n, n_anomalous, n_masks, time.perf_counter() - t0)


def validate_task(task: Any, progress: bool | None = None) -> dict[str, Any]:
    """Decode and check every item of a task's ``train``, ``val`` (if any) and ``test`` once (filling their
    caches); see :func:`validate_split`. Returns ``{split name: SplitCheck}``; raises
    :class:`~piade_lib.data.errors.InvalidSplitError` for the first split with failures."""
    splits = {"train": task.train, "val": getattr(task, "val", None), "test": task.test}
    return {
        name: validate_split(ds, f"{task.dataset} {task.normal_class} {name}", progress=progress)
        for name, ds in splits.items()
        if ds is not None
    }
