"""The train and test splits of a run, rebuilt from its configuration: the one-class task of the data
package, optionally limited to a seeded (stratified, for the test split) subset, and the manifest that
records which images the run used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from piade_lib.presets import Preset, get_preset


def limit_dataset(ds: Dataset, n: int | None, seed: int, labels: list[int] | None = None) -> Dataset:
    """A seeded subset of at most ``n`` items (original order kept). With ``labels``, stratified:
    each class keeps its share, and at least one item of each class present."""
    total = len(ds)  # type: ignore[arg-type]
    if n is None or n >= total:
        return ds
    if n < 1:
        raise ValueError(f"limit must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if labels is None or len(labels) != total:
        idx = rng.permutation(total)[:n]
    else:
        y = np.asarray(labels)
        picks = []
        values = np.unique(y)
        members_of = [np.flatnonzero(y == v) for v in values]
        ks = [min(max(1, int(round(n * m.size / total))) if n >= len(values) else 1, m.size) for m in members_of]
        # rounding and the minimum of one per class can overshoot n: take the excess from the largest
        # shares (never below one), so that no class is lost to the random trim below
        while n >= len(values) and sum(ks) > n:
            j = int(np.argmax(ks))
            ks[j] -= 1
        for members, k in zip(members_of, ks):
            picks.append(rng.permutation(members)[:k])
        idx = np.concatenate(picks)
        if idx.size > n:
            idx = rng.permutation(idx)[:n]
    return Subset(ds, sorted(int(i) for i in idx))


def task_from_config(config: dict[str, Any]) -> tuple[Any, Dataset, Dataset]:
    """Rebuild ``(task, train, test)`` from a resolved config dict (limits applied)."""
    from piade_lib.data import one_class_task

    overrides = config.get("preset_overrides") or {}
    preset: str | Preset = get_preset(config["preset"], **overrides) if overrides else config["preset"]
    task = one_class_task(
        config["dataset"],
        config["normal_class"],
        protocol=config.get("protocol"),
        seed=int(config.get("seed", 0)),
        root=config.get("data_root"),
        image_size=config.get("image_size"),
        preset=preset,
        **(config.get("protocol_params") or {}),
    )
    seed = int(config.get("seed", 0))
    labels = (getattr(task, "manifest", None) or {}).get("test_labels")
    train = limit_dataset(task.train, config.get("limit_train"), seed)
    test = limit_dataset(task.test, config.get("limit_test"), seed + 1, labels=labels)
    return task, train, test


def split_manifest(task: Any, train: Dataset, test: Dataset) -> dict[str, Any]:
    """The task's manifest, plus the subset positions when the splits are limited."""
    m = dict(getattr(task, "manifest", {}) or {})
    if isinstance(train, Subset) or isinstance(test, Subset):
        m["subset"] = {
            "note": "limit_train/limit_test: only these positions of train_ids/test_ids are used",
            "train_positions": list(map(int, train.indices)) if isinstance(train, Subset) else None,
            "test_positions": list(map(int, test.indices)) if isinstance(test, Subset) else None,
        }
    return m


@dataclass
class Splits:
    """The data of one run: the task, its (limited) train and test splits, and the manifest that records
    which images they hold (``manifest.json``)."""

    task: Any
    train: Dataset
    test: Dataset
    manifest: dict[str, Any]

    @property
    def has_masks(self) -> bool:
        return bool(getattr(self.task, "has_masks", False))

    def same_data_as(self, recorded: dict[str, Any]) -> bool:
        """Whether a recorded manifest names the same images (checksum and subset positions)."""
        return recorded.get("checksum") == self.manifest.get("checksum") and recorded.get(
            "subset"
        ) == self.manifest.get("subset")


def load_splits(config: dict[str, Any], *, validate: bool = True, progress: bool = False) -> Splits:
    """The splits of a run config. With ``validate`` every train and test image is decoded once
    (filling the in-memory cache training uses anyway) and checked (shape, range, finiteness, masks),
    so a corrupt image or a mask of the wrong size stops the run before anything is written or trained
    (:func:`piade_lib.data.validate_split` names every bad file)."""
    from piade_lib.data import validate_split

    task, train, test = task_from_config(config)
    if len(train) < 2:  # type: ignore[arg-type]
        raise ValueError(
            f"{config['dataset']} class {config['normal_class']}: {len(train)} training image(s); "  # type: ignore[arg-type]
            "need at least 2"
        )
    if validate:
        validate_split(train, "train", progress=progress)
        validate_split(test, "test", progress=progress)
    return Splits(task, train, test, split_manifest(task, train, test))
