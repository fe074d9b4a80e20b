"""The entry points: ``DATASETS``, ``classes()``, ``one_class_task()``, ``download()``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piade_lib.data import coil100, digits, mvtec, textures, torchvision_sets
from piade_lib.data.archives import SOURCES, RemoteFile, checksum_text
from piade_lib.data.base import (
    ImageDataset,
    OneClassTask,
    check_seed,
    data_root,
    resolve_class,
    resolve_params,
)
from piade_lib.data.errors import (
    DatasetDownloadError,
    UnknownDatasetError,
    UnknownProtocolError,
)
from piade_lib.data.transforms import (
    DEFAULT_IMAGE_SIZE,
    image_transform,
    mask_transform,
    preprocessing_summary,
    resolve_image_size,
)
from piade_lib.presets import Preset, get_preset


@dataclass(frozen=True)
class DatasetSpec:
    """What the package knows about a dataset: its classes, protocols (with parameter defaults) and role."""

    name: str
    title: str
    classes: tuple[str, ...]
    protocols: dict[str, dict[str, Any]]  # protocol -> parameter defaults
    default_protocol: str
    standin: bool
    has_masks: bool
    notes: dict[str, str]  # protocol -> the sentence recorded as manifest["note"]

    @property
    def image_size(self) -> int:
        return DEFAULT_IMAGE_SIZE[self.name]


_LSA_NOTE = (
    "Table 2 protocol (one-class {title}, as in LSA, Abati et al. 2019): train on the normal class's train images, "
    "test on the whole test split (the other nine classes are anomalous)."
)
_ICPR_NOTE = (
    "{title} one-class protocol of the ICPR 2021 version (same as Table 2 / LSA): train on the normal class's "
    "train images, test on the whole test split."
)

DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10",
        torchvision_sets.CLASSES["cifar10"],
        {"lsa": torchvision_sets.LSA_DEFAULTS},
        "lsa",
        False,
        False,
        {"lsa": _LSA_NOTE.format(title="CIFAR-10")},
    ),
    "mnist": DatasetSpec(
        "mnist",
        "MNIST",
        torchvision_sets.CLASSES["mnist"],
        {"lsa": torchvision_sets.IDX_LSA_DEFAULTS},
        "lsa",
        False,
        False,
        {"lsa": _ICPR_NOTE.format(title="MNIST")},
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        "Fashion-MNIST",
        torchvision_sets.CLASSES["fashion_mnist"],
        {"lsa": torchvision_sets.IDX_LSA_DEFAULTS},
        "lsa",
        False,
        False,
        {"lsa": _ICPR_NOTE.format(title="Fashion-MNIST")},
    ),
    "mvtec": DatasetSpec(
        "mvtec",
        "MVTec AD",
        mvtec.CATEGORIES,
        {"mvtec": mvtec.MVTEC_DEFAULTS},
        "mvtec",
        False,
        True,
        {
            "mvtec": "Table 3 protocol (MVTec AD, image level): train on train/good, test on all of test/ "
            "(good = normal, every defect folder = anomalous); masks allow pixel-level AUROC."
        },
    ),
    "coil100": DatasetSpec(
        "coil100",
        "COIL-100",
        coil100.CLASSES,
        {"gpnd": coil100.GPND_DEFAULTS},
        "gpnd",
        False,
        False,
        {
            "gpnd": "Table 4 protocol (COIL-100, GPND-style 80/20): per object a seeded 57/15 split of its 72 views; "
            "test = the 15 held-out views plus outliers from the other 99 objects."
        },
    ),
    "digits": DatasetSpec(
        "digits",
        "scikit-learn digits",
        digits.CLASSES,
        {"lsa": digits.LSA_DEFAULTS, "gpnd": digits.GPND_DEFAULTS},
        "lsa",
        True,
        False,
        {
            "lsa": "STAND-IN for Table 2 (CIFAR-10, LSA protocol): scikit-learn's 8x8 digits, not CIFAR-10; seeded "
            "stratified train/test split, train on the normal digit, test on the whole test part.",
            "gpnd": "STAND-IN for Table 4 (COIL-100, GPND-style protocol): scikit-learn's 8x8 digits, not COIL-100; "
            "per digit a seeded 80/20 split plus outliers from the other digits.",
        },
    ),
    "textures": DatasetSpec(
        "textures",
        "scikit-image textures with synthetic defects",
        textures.CLASSES,
        {"mvtec": textures.DEFAULTS},
        "mvtec",
        True,
        True,
        {
            "mvtec": "STAND-IN for Table 3 (MVTec AD) and the Figure 4 ablation: crops of scikit-image texture "
            "photographs with synthetic defects and masks, not MVTec AD; MVTec protocol."
        },
    ),
    "folder": DatasetSpec(
        "folder",
        "your own images (MVTec layout)",
        (),
        {"mvtec": mvtec.FOLDER_DEFAULTS},
        "mvtec",
        False,
        True,
        {"mvtec": "User images in the MVTec layout, Table 3 protocol: train on train/good, test on test/."},
    ),
}


def _spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except (KeyError, TypeError):
        raise UnknownDatasetError(f"unknown dataset {dataset!r}; valid datasets: {sorted(DATASETS)}") from None


def classes(dataset: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Class names of ``dataset`` (index i is class i).

    For ``folder``: ``[folder name]`` given ``root``, else ``[]``."""
    spec = _spec(dataset)
    if dataset == "folder":
        return [Path(root).name] if root is not None else []
    return list(spec.classes)


# Protocol parameters that say how the data is obtained or checked, not which data: left out of
# manifest["params"] (the checksum and manifest["source"] record what was found and how it was checked).
HOW_PARAMS = frozenset({"download", "verify_checksums"})


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))


def _build_records(
    dataset: str,
    spec: DatasetSpec,
    normal_class: str | int | None,
    protocol: str,
    root: str | os.PathLike[str] | None,
    params: dict[str, Any],
    seed: int,
) -> tuple[str, int, dict[str, Any]]:
    """Resolve the normal class and run the dataset's builder: (class name, class index, what it built)."""
    if dataset == "folder":
        name = (
            str(normal_class) if normal_class not in (None, "") else (Path(root).name if root is not None else "folder")
        )
        return name, 0, mvtec.build_folder(None if root is None else Path(root), params)
    name, index = resolve_class(dataset, normal_class, spec.classes)
    droot = data_root(root)
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "cifar10": lambda: torchvision_sets.build_lsa(dataset, index, droot, params, seed),
        "mnist": lambda: torchvision_sets.build_lsa(dataset, index, droot, params, seed),
        "fashion_mnist": lambda: torchvision_sets.build_lsa(dataset, index, droot, params, seed),
        "mvtec": lambda: mvtec.build_mvtec(name, droot, params),
        "coil100": lambda: coil100.build_gpnd(name, droot, params, seed),
        "digits": lambda: digits.build(protocol, index, params, seed),
        "textures": lambda: textures.build(index, params, seed),
    }
    return name, index, builders[dataset]()


def _splits(
    dataset: str, built: dict[str, Any], size: int, preset: Preset
) -> tuple[ImageDataset, ImageDataset, ImageDataset | None]:
    """The train, test and (optional) val splits over the built records, with the dataset's preprocessing."""
    itf, mtf = image_transform(dataset, size, preset), mask_transform(dataset, size, preset)

    def split(records: list | None) -> ImageDataset | None:
        return (
            None
            if records is None
            else ImageDataset(records, built["source"], itf, mtf, size, has_masks=bool(built["has_masks"]))
        )

    return split(built["train"]), split(built["test"]), split(built["val"])


def _note(spec: DatasetSpec, protocol: str, params: dict[str, Any]) -> str:
    """The manifest's note: the protocol's sentence, plus the authors'-subset caveat where it applies."""
    note = spec.notes[protocol]
    if params.get("authors_subset"):
        note += (
            " Authors' subset: only the first 15 normal and 15 anomalous test images (sorted order) are scored, "
            "like the released code; not the paper's full test set."
        )
    return note


def _split_summary(train: ImageDataset, test: ImageDataset, val: ImageDataset | None) -> dict[str, Any]:
    """The manifest's entries on the splits: their sizes, item ids and test labels."""
    return {
        "n_train": len(train),
        "n_val": 0 if val is None else len(val),
        "n_test": len(test),
        "n_test_normal": sum(1 for lab in test.labels if lab == 0),
        "n_test_anomalous": sum(1 for lab in test.labels if lab == 1),
        "train_ids": train.ids,
        "val_ids": [] if val is None else val.ids,
        "test_ids": test.ids,
        "test_labels": test.labels,
    }


def check_task_arguments(
    dataset: str, protocol: str | None = None, image_size: int | None = None, seed: Any = 0, **protocol_params: Any
) -> tuple[str, dict[str, Any], int, int]:
    """The arguments of :func:`one_class_task` that need no data, checked (the dataset, protocol, protocol
    parameters, image size and seed; a :class:`PiadeDataError` names the bad one): ``(protocol, parameters
    with defaults, image size, seed)``. Cheap, so that a run is refused before anything is created for it."""
    spec = _spec(dataset)
    protocol = spec.default_protocol if protocol is None else protocol
    if protocol not in spec.protocols:
        raise UnknownProtocolError(f"unknown protocol {protocol!r} for {dataset!r}; valid: {sorted(spec.protocols)}")
    params = resolve_params(dataset, protocol, protocol_params, spec.protocols[protocol])
    return protocol, params, resolve_image_size(dataset, image_size), check_seed(seed)


def one_class_task(
    dataset: str,
    normal_class: str | int | None,
    protocol: str | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    preset: str | Preset = "paper",
    **protocol_params: Any,
) -> OneClassTask:
    """Build a one-class task: ``train`` (normal images), ``test`` (1 = anomalous, masks), ``val`` (optional), manifest.

    ``normal_class`` is a name from ``classes(dataset)`` or its index (for ``folder``: any label, default the
    folder's name). ``seed``: an integer in [0, 2**32 - 1]. ``root``: the data root (else $PIADE_DATA, else
    ./data); for ``folder`` the category folder.
    Protocol parameters (see ``DATASETS[dataset].protocols``): ``holdout_fraction`` (lsa), ``download``
    (torchvision sets, mvtec, coil100), ``verify_checksums`` (mnist, fashion_mnist; default True: the raw
    files must be the official release, checked by size, item count and md5; False accepts well-formed IDX
    files of your own), ``authors_subset`` (mvtec, folder), ``train_fraction`` /
    ``outlier_fraction`` (gpnd), ``test_fraction`` (digits lsa), ``crop_size``, ``n_train``, ``n_test_good``,
    ``n_test_defect``, ``defect_types`` (textures).
    """
    spec = _spec(dataset)
    protocol, params, size, seed = check_task_arguments(dataset, protocol, image_size, seed, **protocol_params)
    preset_obj = get_preset(preset)

    name, index, built = _build_records(dataset, spec, normal_class, protocol, root, params, seed)
    train, test, val = _splits(dataset, built, size, preset_obj)
    note = _note(spec, protocol, params)
    warns = list(built.get("warnings", []))
    manifest: dict[str, Any] = {
        "dataset": dataset,
        "class": name,
        "class_index": index,
        "protocol": protocol,
        "seed": seed,
        "params": _jsonable({k: v for k, v in params.items() if k not in HOW_PARAMS}),
        "image_size": size,
        "preset": preset_obj.name,
        "preprocessing": preprocessing_summary(dataset, size, preset_obj),
        "has_masks": bool(built["has_masks"]),
        **_split_summary(train, test, val),
        "checksum": _jsonable(built["checksum"]),
        "source": _jsonable(built.get("info", {})),
        "standin": spec.standin,
        "note": note,
        "warnings": warns,
    }
    return OneClassTask(
        dataset=dataset,
        normal_class=name,
        protocol=protocol,
        seed=seed,
        image_size=size,
        preset=preset_obj.name,
        train=train,
        test=test,
        val=val,
        has_masks=bool(built["has_masks"]),
        manifest=manifest,
        warnings=warns,
    )


# The datasets ``download`` fetches (the others ship with their libraries or are your own).
DOWNLOADABLE = ("cifar10", "mnist", "fashion_mnist", "mvtec", "coil100")


def download_sources(
    dataset: str, root: str | os.PathLike[str] | None = None, url: str | None = None
) -> tuple[Path, list[RemoteFile]]:
    """The folder the published files of ``dataset`` belong in and the files (URL, name, checksum)."""
    droot = data_root(root)
    if dataset in ("mvtec", "coil100"):
        import dataclasses

        src = SOURCES[dataset]
        return droot, [dataclasses.replace(src, url=url, mirrors=()) if url else src]
    if dataset in torchvision_sets.TV_CLASS:
        sub, remotes = torchvision_sets.remote_files(dataset)
        return droot / sub if sub else droot, remotes
    raise UnknownDatasetError(f"{dataset!r} has nothing to download; datasets with a download: {list(DOWNLOADABLE)}")


def manual_download_help(dataset: str, root: str | os.PathLike[str] | None = None, url: str | None = None) -> str:
    """One sentence: which files to fetch by hand (URLs, checksums), where to put them, what to run then."""
    folder, remotes = download_sources(dataset, root, url)
    files = "; ".join(f"{r.url} ({checksum_text(r)})" for r in remotes)
    return (
        f"Fetch by hand {files}, put {'it' if len(remotes) == 1 else 'them'} in {folder}/ and run "
        f"`piade download {dataset} --root {data_root(root)}` again: it checks "
        f"{'it' if len(remotes) == 1 else 'them'} and unpacks without network access."
    )


def download(dataset: str, root: str | os.PathLike[str] | None = None, url: str | None = None) -> Path | None:
    """Fetch ``dataset`` into the data root and check it; returns its folder (None for the bundled stand-ins).

    cifar10 / mnist / fashion_mnist: the files of torchvision's tables (md5-checked). mvtec / coil100: the
    published archive (sha256-checked, ``url`` overrides the host). Every file is downloaded to a
    ``.part`` name and renamed only once its checksum matches; archives are extracted safely; files
    placed by hand are checked and used instead of downloaded. digits / textures ship with
    scikit-learn / scikit-image: nothing to do. When a download fails (no network), the
    :class:`DatasetDownloadError` names the URLs, the files, their checksums and where to put them.
    """
    spec = _spec(dataset)
    droot = data_root(root)
    if dataset in ("digits", "textures"):
        return None
    if dataset == "folder":
        raise UnknownDatasetError("'folder' is your own data: there is nothing to download (see docs/datasets.md)")
    if url is not None and dataset not in ("mvtec", "coil100"):
        raise ValueError(f"url= is supported for mvtec and coil100 only; {spec.title} uses torchvision's mirrors")
    droot.mkdir(parents=True, exist_ok=True)
    try:
        if dataset == "mvtec":
            return mvtec.download(droot, url=url)
        if dataset == "coil100":
            return coil100.download(droot, url=url)
        return torchvision_sets.download(dataset, droot)
    except DatasetDownloadError as exc:
        tried = getattr(exc, "errors", None)
        if not tried:
            raise
        raise DatasetDownloadError(
            f"cannot download {dataset} (no network access, or the host moved): {'; '.join(tried)}. "
            + manual_download_help(dataset, droot, url)
        ) from exc
