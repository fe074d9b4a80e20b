"""Datasets, one-class evaluation protocols, preprocessing and manifests.

>>> from piade_lib.data import one_class_task, classes
>>> task = one_class_task("digits", "3")          # offline stand-in, builds in about a second
>>> task.train[0]["image"].shape, task.test[0]["label"]

Datasets (default protocol): ``cifar10``, ``mnist``, ``fashion_mnist`` (lsa), ``mvtec`` (mvtec),
``coil100`` (gpnd), ``digits`` (lsa or gpnd; stand-in for Tables 2 and 4), ``textures`` (mvtec;
stand-in for Table 3 and Figure 4), ``folder`` (your own images in the MVTec layout).
Data root: ``root=``, else ``$PIADE_DATA``, else ``./data``. See docs/datasets.md.

Before training, ``validate_split(split, "train")`` (or ``validate_task(task)``) decodes every item once,
filling the split's cache, and raises one :class:`InvalidSplitError` listing every unreadable file,
wrong mask or out-of-range image.
"""

from piade_lib.data.archives import SOURCES, RemoteFile, safe_extract
from piade_lib.data.base import ENV_VAR, ImageDataset, OneClassTask, Record, data_root
from piade_lib.data.errors import (
    ChecksumMismatchError,
    CorruptImageError,
    DatasetDownloadError,
    DatasetNotFoundError,
    DataWarning,
    IncompleteDatasetWarning,
    InvalidSplitError,
    MaskPairingError,
    PiadeDataError,
    ProtocolParameterError,
    UnknownClassError,
    UnknownDatasetError,
    UnknownProtocolError,
    UnsafeArchiveError,
    UnsupportedImageSizeError,
    UnverifiedDataWarning,
)
from piade_lib.data.tasks import (
    DATASETS,
    DOWNLOADABLE,
    DatasetSpec,
    check_task_arguments,
    classes,
    download,
    download_sources,
    manual_download_help,
    one_class_task,
)
from piade_lib.data.transforms import (
    DEFAULT_IMAGE_SIZE,
    IMAGE_EXTENSIONS,
    SUPPORTED_IMAGE_SIZES,
    image_transform,
    load_image,
    load_image_for_scoring,
    mask_transform,
    preprocessing_summary,
)
from piade_lib.data.validation import ItemFailure, SplitCheck, validate_split, validate_task

__all__ = [
    "DATASETS",
    "DEFAULT_IMAGE_SIZE",
    "DOWNLOADABLE",
    "ENV_VAR",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "SUPPORTED_IMAGE_SIZES",
    "ChecksumMismatchError",
    "CorruptImageError",
    "DataWarning",
    "DatasetDownloadError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "ImageDataset",
    "IncompleteDatasetWarning",
    "InvalidSplitError",
    "ItemFailure",
    "MaskPairingError",
    "OneClassTask",
    "PiadeDataError",
    "ProtocolParameterError",
    "Record",
    "RemoteFile",
    "SplitCheck",
    "UnknownClassError",
    "UnknownDatasetError",
    "UnknownProtocolError",
    "UnsafeArchiveError",
    "UnsupportedImageSizeError",
    "UnverifiedDataWarning",
    "classes",
    "data_root",
    "download",
    "download_sources",
    "image_transform",
    "load_image",
    "load_image_for_scoring",
    "manual_download_help",
    "mask_transform",
    "one_class_task",
    "check_task_arguments",
    "preprocessing_summary",
    "safe_extract",
    "validate_split",
    "validate_task",
]
