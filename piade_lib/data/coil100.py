"""COIL-100 (Table 4) under a GPND-style protocol.

Files: ``obj{1..100}__{0,5,...,355}.png`` (128x128 RGB, 72 views per object) in ``<root>/coil-100/``
(the archive's folder) or directly in ``<root>``; other files (the archive's
``convertGroupppm2png.pl``) are skipped.

Protocol ``gpnd`` (our reading; the paper says only "training strategy of GPND, 80%:20%"): for the
normal object a seeded split of its views into ``floor(train_fraction * 72) = 57`` training views
and 15 test views; the test set adds outliers drawn (seeded, without replacement) from all views
of the other 99 objects so that outliers make up ``outlier_fraction`` (0.5 -> 15) of it.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from piade_lib.data.archives import SOURCES, locate_or_extract
from piade_lib.data.base import FileSource, Record, check_fraction, how_to_point_at_data, n_outliers, tree_sha256
from piade_lib.data.errors import DatasetNotFoundError, IncompleteDatasetWarning

CLASSES: tuple[str, ...] = tuple(f"obj{i}" for i in range(1, 101))
N_VIEWS = 72  # views per object in the published dataset (0, 5, ..., 355 degrees)
FILE_RE = re.compile(r"^obj(\d+)__(\d+)\.png$", re.IGNORECASE)
GPND_DEFAULTS: dict[str, Any] = {"train_fraction": 0.8, "outlier_fraction": 0.5, "download": False}


def scan(folder: Path) -> dict[str, list[tuple[int, str]]]:
    """``{"objN": [(angle, filename), ...]}`` sorted by angle; non-matching files are skipped."""
    objs: dict[str, list[tuple[int, str]]] = {}
    for p in folder.iterdir():
        m = FILE_RE.match(p.name)
        if m and p.is_file():
            objs.setdefault(f"obj{int(m.group(1))}", []).append((int(m.group(2)), p.name))
    return {k: sorted(v) for k, v in objs.items()}


def find_folder(root: Path) -> tuple[Path, str] | None:
    """The folder holding the obj*.png files and the layout used, or None."""
    for rel, layout in (("coil-100", "<root>/coil-100"), ("", "<root>")):
        d = root / rel if rel else root
        if d.is_dir() and any(FILE_RE.match(p.name) for p in d.iterdir()):
            return d, layout
    return None


def _missing_message(root: Path) -> str:
    src = SOURCES["coil100"]
    return (
        f"COIL-100 not found: no obj<N>__<angle>.png files in {root / 'coil-100'} or {root}. Download "
        f"{src.filename} from {src.url} (or {src.mirrors[0]}; {src.size:,} bytes, sha256 {src.sha256}) and "
        f"extract it into <root> (it holds coil-100/obj1__0.png ...), or place the zip at {root / src.filename} "
        f"(it is then checked and extracted), or pass download=True (piade: `piade download coil100`, or "
        f"--param download=true). " + how_to_point_at_data(root)
    )


def ensure(root: Path, download: bool = False, url: str | None = None) -> tuple[Path, str]:
    """Locate COIL-100; extract a placed archive or download it when asked."""
    return locate_or_extract(
        root,
        SOURCES["coil100"],
        lambda: find_folder(root),
        lambda: _missing_message(root),
        "obj*.png files",
        download,
        url,
    )


def build_gpnd(normal: str, root: Path, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Records of the GPND-style protocol for one COIL-100 object."""
    folder, layout = ensure(root, download=bool(params["download"]))
    objs = scan(folder)
    if normal not in objs:
        raise DatasetNotFoundError(
            f"no views of {normal} ({normal}__<angle>.png) in {folder}. " + _missing_message(root)
        )
    frac = check_fraction("train_fraction", params["train_fraction"], low_open=True)
    views = objs[normal]
    n_train = math.floor(frac * len(views))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(views))
    train_v = sorted(views[i] for i in perm[:n_train])
    test_v = sorted(views[i] for i in perm[n_train:])
    pool = [(o, a, f) for o in sorted(objs, key=lambda s: int(s[3:])) if o != normal for a, f in objs[o]]
    n_out = n_outliers(len(test_v), params["outlier_fraction"])
    if n_out > len(pool):
        raise ValueError(
            f"outlier_fraction={params['outlier_fraction']} needs {n_out} outliers; "
            f"only {len(pool)} views of other objects exist"
        )
    picked = sorted(rng.choice(len(pool), size=n_out, replace=False).tolist())

    def rec(name: str, label: int) -> Record:
        return Record(Path(name).stem, label, (name, None))

    test = [rec(f, 0) for _, f in test_v] + [rec(pool[i][2], 1) for i in picked]
    all_files = [f for o in objs for _, f in objs[o]]
    warns = []
    if len(objs) != len(CLASSES) or any(len(v) != N_VIEWS for v in objs.values()):
        warns.append(incomplete_message(folder, root, objs, normal))
        # stacklevel: build_gpnd <- lambda <- _build_records <- one_class_task <- its caller
        warnings.warn(warns[0], IncompleteDatasetWarning, stacklevel=5)
    return {
        "source": FileSource(folder),
        "train": [rec(f, 0) for _, f in train_v],
        "val": None,
        "test": test,
        "has_masks": False,
        "checksum": {
            "algorithm": "sha256",
            "value": tree_sha256(folder, all_files),
            "of": f"the {len(all_files)} obj*.png files",
        },
        "warnings": warns,
        "info": {
            "layout": layout,
            "n_views": len(views),
            "n_objects_found": len(objs),
            "n_train": n_train,
            "n_test_normal": len(test_v),
            "n_test_outliers": n_out,
        },
    }


def incomplete_message(folder: Path, root: Path, objs: dict[str, list[tuple[int, str]]], normal: str) -> str:
    """One line: how many objects and images of COIL-100 were found, how many are expected, and the fix."""
    n_images = sum(len(v) for v in objs.values())
    short = sorted((o for o, v in objs.items() if len(v) != N_VIEWS), key=lambda o: int(o[3:]))
    views = (
        f"; {len(short)} object(s) without all {N_VIEWS} views (e.g. {short[0]}: {len(objs[short[0]])})"
        if short
        else ""
    )
    return (
        f"incomplete COIL-100 in {folder}: found {len(objs)} of {len(CLASSES)} objects and {n_images:,} of "
        f"{len(CLASSES) * N_VIEWS:,} images{views}; the task for {normal} uses {len(objs.get(normal, []))} views and "
        f"outliers from {len(objs) - 1} other object(s), so its numbers are not comparable with the paper's Table 4. "
        f"Get the complete set with `piade download coil100 --root {root}`."
    )


def download(root: Path, url: str | None = None) -> Path:
    """Download (or take the placed zip), verify size and sha256, extract; return the image folder."""
    return ensure(root, download=True, url=url)[0]
