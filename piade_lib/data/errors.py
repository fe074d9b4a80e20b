"""Exceptions of :mod:`piade_lib.data`, each with a message that says what is wrong and how to fix it.

All derive from :class:`PiadeDataError` and also from the built-in exception a caller would
expect (``FileNotFoundError``, ``ValueError``, ``KeyError``, ``OSError``), so generic handlers
keep working.
"""
from __future__ import annotations

from pathlib import Path


class PiadeDataError(Exception):
    """Base class of every data error raised by piade_lib.data."""

    def __str__(self) -> str:  # KeyError would otherwise repr() its message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(PiadeDataError, FileNotFoundError):
    """The dataset's files are not where they were looked for (the message gives the layout, URL and checksum)."""


class DatasetDownloadError(PiadeDataError, OSError):
    """A download failed (no network, host moved); the message says how to place the files by hand."""


class ChecksumMismatchError(PiadeDataError, ValueError):
    """A file's checksum (or size) differs from the published one. The file is never deleted."""

    def __init__(self, path: str | Path, expected: str, got: str, algorithm: str = "sha256", hint: str = "") -> None:
        self.path = Path(path)
        self.expected = expected
        self.got = got
        self.algorithm = algorithm
        msg = (
            f"{algorithm} mismatch for {self.path}: expected {expected}, got {got}. "
            f"The file was kept, not deleted. It is incomplete, corrupted or a different version: "
            f"delete it and download it again, or fetch it by hand from the source."
        )
        super().__init__(msg + (f" {hint}" if hint else ""))


class CorruptImageError(PiadeDataError, OSError):
    """An image (or dataset file) exists but cannot be decoded."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        self.path = Path(path)
        msg = f"cannot read image file {self.path}" + (f": {reason}" if reason else "")
        super().__init__(msg + ". Replace or remove the file (re-extract the dataset if it came from an archive).")


class MaskPairingError(PiadeDataError, ValueError):
    """A test image has no ground-truth mask, or a mask has no test image, or their sizes differ."""


class UnsafeArchiveError(PiadeDataError, ValueError):
    """An archive member would be written outside the target folder, or is a link or a device file."""


class UnknownDatasetError(PiadeDataError, KeyError, ValueError):
    """The dataset name is not in :data:`piade_lib.data.DATASETS`."""


class UnknownClassError(PiadeDataError, KeyError, ValueError):
    """The normal class is not one of ``classes(dataset)``."""


class UnknownProtocolError(PiadeDataError, KeyError, ValueError):
    """The protocol (or a protocol parameter) is not defined for the dataset."""


class UnsupportedImageSizeError(PiadeDataError, ValueError):
    """The network supports image sizes 32 and 120 only."""
