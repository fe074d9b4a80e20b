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

    def __init__(
        self,
        path: str | Path,
        expected: str,
        got: str,
        algorithm: str = "sha256",
        hint: str = "",
        fix: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.expected = expected
        self.got = got
        self.algorithm = algorithm
        if fix is None:
            fix = (
                "The file was kept, not deleted. It is incomplete, corrupted or a different version: "
                "delete it and download it again, or fetch it by hand from the source."
            )
        msg = f"{algorithm} mismatch for {self.path}: expected {expected}, got {got}. {fix}"
        super().__init__(msg + (f" {hint}" if hint else ""))


class CorruptImageError(PiadeDataError, OSError):
    """An image (or dataset file) exists but cannot be decoded, or holds something else than it should.

    ``reason`` says what is wrong; ``fix`` replaces the default last sentence (how to repair it).
    """

    def __init__(self, path: str | Path, reason: str = "", fix: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        what = "file" if fix is not None else "image file"
        msg = f"cannot read {what} {self.path}" + (f": {reason}" if reason else "")
        if fix is None:
            fix = "Replace or remove the file (re-extract the dataset if it came from an archive)."
        super().__init__(f"{msg}. {fix}")


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


class ProtocolParameterError(PiadeDataError, ValueError):
    """A protocol parameter (or the seed) has a value of the wrong type or out of its range."""


class UnsupportedImageSizeError(PiadeDataError, ValueError):
    """The network supports image sizes 32 and 120 only."""


class InvalidSplitError(PiadeDataError, ValueError):
    """Items of a split failed :func:`piade_lib.data.validate_split` (unreadable file, wrong mask, bad values).

    ``split`` is the split's name, ``n_items`` its size and ``failures`` every failed item, as
    :class:`piade_lib.data.validation.ItemFailure` (position in the split, id, file, reason). ``fix``
    replaces the default last sentence (how to repair the files), e.g. for a folder of the user's own images.
    """

    def __init__(self, split: str, n_items: int, failures: list, shown: int = 5, fix: str | None = None) -> None:
        self.split = split
        self.n_items = n_items
        self.failures = list(failures)
        first = "; ".join(f"{f.where}: {f.reason}" for f in self.failures[:shown])
        more = len(self.failures) - min(shown, len(self.failures))
        if fix is None:
            fix = "Replace or remove these files (re-extract or re-download the dataset), then build the task again."
        super().__init__(
            f"{split} split: {len(self.failures)} of {n_items} item(s) failed validation: {first}"
            + (f"; and {more} more" if more else "")
            + f". {fix}"
        )


class DataWarning(UserWarning):
    """Base class of the warnings of piade_lib.data (filter them with ``warnings.filterwarnings``)."""


class IncompleteDatasetWarning(DataWarning):
    """The dataset folder holds fewer files than the published dataset (e.g. some COIL-100 objects missing)."""


class UnverifiedDataWarning(DataWarning):
    """Checksum verification was turned off and the files are not the published ones."""
