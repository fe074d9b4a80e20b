"""MVTec AD (Table 3) and the user's own images in the MVTec layout (``folder``).

Layout of a category folder::

    <category>/train/good/*.png                       normal training images
    <category>/test/good/*.png                        normal test images        (label 0)
    <category>/test/<defect>/*.png                    anomalous test images     (label 1)
    <category>/ground_truth/<defect>/<stem>_mask.png  pixel masks of the anomalous images

MVTec requires a mask for every anomalous image and no mask without an image. For ``folder`` the
``ground_truth`` folder is optional (no masks -> ``has_masks`` False), any common image format is
read, and a missing ``test`` folder gives an empty test set with a warning.

Order: files are sorted by name (folders alphabetically), which is also the "loader order" of
``authors_subset``: the released code scores only the first 15 normal and the first 15 anomalous
test images (5 batches of 3); it lists files with ``os.listdir`` (file-system order), we sort.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from piade_lib.data.archives import SOURCES, locate_or_extract
from piade_lib.data.base import FileSource, Record, how_to_point_at_data, tree_sha256
from piade_lib.data.errors import DatasetNotFoundError, MaskPairingError
from piade_lib.data.transforms import IMAGE_EXTENSIONS

CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
TEXTURE_CATEGORIES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
GRAYSCALE_CATEGORIES: tuple[str, ...] = ("grid", "screw", "zipper")
AUTHORS_SUBSET_SIZE = 15  # released code: first 5 batches of 3 images of each test loader
MVTEC_DEFAULTS: dict[str, Any] = {"authors_subset": False, "download": False}
FOLDER_DEFAULTS: dict[str, Any] = {"authors_subset": False}

# the folder dataset holds the user's own images: there is no archive to extract again
FOLDER_FIX = (
    "These are your own images: replace each file named with a readable image (or a mask of its image's size), "
    "or remove it from the folder, then build the task again (piade: run the same command again)."
)

LAYOUT = (
    "<category>/train/good/*.png, <category>/test/good/*.png, <category>/test/<defect>/*.png, "
    "<category>/ground_truth/<defect>/<stem>_mask.png"
)


def _images(folder: Path) -> list[str]:
    """Names of the image files in ``folder`` (sorted; hidden and non-image files skipped)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _train_records(cat_dir: Path) -> list[Record]:
    """Records of the normal training images in ``train/good`` (at least one is required)."""
    train_dir = cat_dir / "train" / "good"
    if not train_dir.is_dir() or not _images(train_dir):
        raise DatasetNotFoundError(
            f"no training images in {train_dir}: a category folder needs train/good/ with at least one image "
            f"({', '.join(IMAGE_EXTENSIONS)}). Expected layout: {LAYOUT}."
        )
    return [Record(f"train/good/{n}", 0, (f"train/good/{n}", None)) for n in _images(train_dir)]


def _mask_files(gt_dir: Path) -> dict[str, dict[str, str]]:
    """The masks on disk, by defect: ``{defect: {image stem: mask file name}}``."""
    gt: dict[str, dict[str, str]] = {}
    for defect in _subdirs(gt_dir):
        gt[defect] = {}
        for n in _images(gt_dir / defect):
            stem = Path(n).stem
            if not stem.endswith("_mask"):
                raise MaskPairingError(
                    f"unexpected file {gt_dir / defect / n}: masks must be named <image stem>_mask.<ext>"
                )
            gt[defect][stem[: -len("_mask")]] = n
    return gt


def _defect_records(test_dir: Path, gt_dir: Path, defect: str, masks: dict[str, str], need_masks: bool) -> list[Record]:
    """Records of one ``test/<defect>`` folder, each paired with its mask from ``masks`` (which it empties)."""
    label = 0 if defect == "good" else 1
    records: list[Record] = []
    for n in _images(test_dir / defect):
        stem = Path(n).stem
        m = masks.pop(stem, None)
        if m is None and label == 1 and need_masks:
            raise MaskPairingError(
                f"missing mask for {test_dir / defect / n}: expected {gt_dir / defect / (stem + '_mask.png')}. "
                f"Every anomalous test image needs its mask when a ground_truth folder exists "
                f"(remove ground_truth/ entirely to run without masks)."
            )
        rel_m = None if m is None else f"ground_truth/{defect}/{m}"
        records.append(Record(f"test/{defect}/{n}", label, (f"test/{defect}/{n}", rel_m)))
    if masks:
        extra = [str(gt_dir / defect / v) for v in masks.values()]
        raise MaskPairingError(
            f"mask(s) without a test image: {extra[:5]}{' ...' if len(extra) > 5 else ''}: "
            f"no matching file in {test_dir / defect}. Remove the extra masks or add their images."
        )
    return records


def _test_records(cat_dir: Path, has_masks: bool, masks_required: bool) -> list[Record]:
    """Records of every ``test/<defect>`` folder (good: label 0, others: 1), masks paired from ``ground_truth``."""
    test_dir, gt_dir = cat_dir / "test", cat_dir / "ground_truth"
    gt = _mask_files(gt_dir) if has_masks else {}
    test: list[Record] = []
    for defect in _subdirs(test_dir):
        test += _defect_records(test_dir, gt_dir, defect, gt.pop(defect, {}), masks_required or has_masks)
    if gt:
        extra_dirs = [str(gt_dir / d) for d in gt]
        raise MaskPairingError(
            f"ground-truth folder(s) without a test folder: {extra_dirs}. Every ground_truth/<defect>/ needs "
            f"test/<defect>/."
        )
    if masks_required and not has_masks and any(r.label for r in test):
        raise MaskPairingError(f"no ground_truth folder in {cat_dir}; MVTec AD needs one. Expected layout: {LAYOUT}.")
    return test


def scan_category(cat_dir: Path, masks_required: bool, require_test: bool) -> dict[str, Any]:
    """Parse a category folder in the MVTec layout into records (keys: (image relpath, mask relpath or None))."""
    train = _train_records(cat_dir)
    warn: list[str] = []
    test_dir = cat_dir / "test"
    test: list[Record] = []
    has_masks = (cat_dir / "ground_truth").is_dir()
    if not test_dir.is_dir():
        if require_test:
            raise DatasetNotFoundError(f"no test folder {test_dir}. Expected layout: {LAYOUT}.")
        warn.append(
            f"no test folder in {cat_dir.name}: the test set is empty (training works, evaluation does not). "
            f"Add test/good/ and test/<defect>/ to evaluate."
        )
    else:
        test = _test_records(cat_dir, has_masks, masks_required)
        if not test:
            warn.append(f"the test folder {test_dir} holds no images: the test set is empty.")
        elif not any(r.label for r in test) or all(r.label for r in test):
            warn.append(f"the test set of {cat_dir.name} has only one label: AUROC is undefined.")
    return {"train": train, "test": test, "has_masks": has_masks, "warnings": warn}


def authors_subset(test: list[Record], n: int = AUTHORS_SUBSET_SIZE) -> list[Record]:
    """The first ``n`` normal and first ``n`` anomalous test records in loader (sorted) order."""
    return [r for r in test if r.label == 0][:n] + [r for r in test if r.label == 1][:n]


def _records_checksum(cat_dir: Path, scan: dict[str, Any]) -> dict[str, Any]:
    rels = [r.key[0] for r in scan["train"] + scan["test"]] + [r.key[1] for r in scan["test"] if r.key[1]]
    return {"algorithm": "sha256", "value": tree_sha256(cat_dir, rels), "of": f"the {len(rels)} image and mask files"}


def find_category(root: Path, category: str) -> tuple[Path, str] | None:
    """The category folder under the data root and the layout used, or None."""
    for rel in (f"mvtec_anomaly_detection/{category}", category):
        if (root / rel / "train").is_dir():
            return root / rel, f"<root>/{rel}"
    return None


def _missing_message(root: Path, category: str) -> str:
    src = SOURCES["mvtec"]
    return (
        f"MVTec AD category {category!r} not found: looked for {root / 'mvtec_anomaly_detection' / category} and "
        f"{root / category}. Expected layout: <root>/mvtec_anomaly_detection/{LAYOUT} (or <root>/<category>/...). "
        f"Download {src.filename} from {src.url} (about 4.9 GB, sha256 {src.sha256}) and extract it into "
        f"<root>/mvtec_anomaly_detection, or place the archive at {root / src.filename} (it is then checked and "
        f"extracted), or pass download=True (piade: `piade download mvtec`, or --param download=true). "
        + how_to_point_at_data(root)
    )


def ensure_mvtec(root: Path, category: str, download: bool = False, url: str | None = None) -> tuple[Path, str]:
    """Locate a category; extract a placed archive or download it when asked. Returns (folder, layout used)."""
    return locate_or_extract(
        root,
        SOURCES["mvtec"],
        lambda: find_category(root, category),
        lambda: _missing_message(root, category),
        f"category {category!r}",
        download,
        url,
    )


def build_mvtec(category: str, root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Records of the MVTec image-level protocol (train/good vs all of test/)."""
    cat_dir, layout = ensure_mvtec(root, category, download=bool(params["download"]))
    scan = scan_category(cat_dir, masks_required=True, require_test=True)
    return _records(
        cat_dir,
        scan,
        params,
        has_masks=True,
        info={
            "layout": layout,
            "grayscale_category": category in GRAYSCALE_CATEGORIES,
            "texture_category": category in TEXTURE_CATEGORIES,
        },
    )


def _records(
    cat_dir: Path,
    scan: dict[str, Any],
    params: dict[str, Any],
    has_masks: bool,
    info: dict[str, Any],
    fix: str | None = None,
) -> dict[str, Any]:
    """The task records of a scanned MVTec-layout category (optionally the authors' 15+15 test subset);
    ``fix``: the advice for a file that fails validation (see :class:`FileSource`)."""
    test = authors_subset(scan["test"]) if params["authors_subset"] else scan["test"]
    return {
        "source": FileSource(cat_dir, fix=fix),
        "train": scan["train"],
        "val": None,
        "test": test,
        "has_masks": has_masks,
        "checksum": _records_checksum(cat_dir, scan),
        "warnings": scan["warnings"],
        "info": {**info, "n_test_full": len(scan["test"])},
    }


def build_folder(root: Path | None, params: dict[str, Any]) -> dict[str, Any]:
    """Records for the user's own category folder in the MVTec layout."""
    if root is None:
        raise DatasetNotFoundError(
            f"the 'folder' dataset needs root=<your category folder> (piade: --data-root <your category "
            f"folder>), holding {LAYOUT}; it does not use $PIADE_DATA or ./data."
        )
    cat_dir = Path(root)
    if not cat_dir.is_dir():
        raise DatasetNotFoundError(
            f"folder {cat_dir} does not exist. Pass root=<your category folder> (piade: --data-root <your "
            f"category folder>), holding {LAYOUT}."
        )
    scan = scan_category(cat_dir, masks_required=False, require_test=False)
    for w in scan["warnings"]:
        warnings.warn(w, UserWarning, stacklevel=4)  # build_folder <- _build_records <- one_class_task
    return _records(
        cat_dir,
        scan,
        params,
        has_masks=scan["has_masks"],
        info={"layout": f"<root> = the category folder {cat_dir.name!r}"},
        fix=FOLDER_FIX,
    )


def download(root: Path, url: str | None = None) -> Path:
    """Download (or take the placed archive), verify sha256 and extract MVTec AD; return its folder."""
    src = SOURCES["mvtec"]
    dest = root / src.folder
    if dest.is_dir() and any(find_category(root, c) for c in CATEGORIES):
        return dest
    ensure_mvtec(root, CATEGORIES[0], download=True, url=url)
    return dest
