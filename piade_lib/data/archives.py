"""Archive downloads (MVTec AD, COIL-100): fetch, verify size and sha256, extract safely.

A file that fails verification is never deleted: a user-placed archive stays where it is, and a
fresh download stays as ``<name>.part`` for inspection. Extraction goes into a staging folder next
to the target; any member that would land outside it (absolute path, ``..``), links and device
files are rejected and the staging folder is removed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import stat
import tarfile
import urllib.error
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from torchvision.datasets.utils import download_url, extract_archive

from piade_lib.data.base import file_digest
from piade_lib.data.errors import (
    ChecksumMismatchError,
    DatasetDownloadError,
    DatasetNotFoundError,
    UnsafeArchiveError,
)


@dataclass(frozen=True)
class RemoteFile:
    """A published archive: where to get it, what it is called, how to check it, and what it unpacks to."""

    url: str
    filename: str
    sha256: str | None  # None where only an md5 is published (CIFAR-10, the MNIST family)
    size: int | None = None
    md5: str | None = None
    folder: str = ""  # the folder (under the data root) the archive's content ends up in
    mirrors: tuple[str, ...] = ()


SOURCES: dict[str, RemoteFile] = {
    "mvtec": RemoteFile(
        url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
        "mvtec_anomaly_detection.tar.xz",
        filename="mvtec_anomaly_detection.tar.xz",
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        md5="eefca59f2cede9c3fc5b6befbfec275e",
        folder="mvtec_anomaly_detection",
    ),
    "coil100": RemoteFile(
        url="http://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip",
        mirrors=("https://cave.cs.columbia.edu/old/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip",),
        filename="coil-100.zip",
        sha256="fcb4b8b01c0778f416d8d7a09f45082c4f7075cc74743dcddd5c44307bd4afe7",
        size=130_688_843,
        folder="coil-100",
    ),
}


# Seconds a connection attempt or a read may stall before a download counts as failed (no network).
TIMEOUT = 20.0


def checksum_text(remote: RemoteFile) -> str:
    """``"sha256 <hex>"`` (or ``"md5 <hex>"`` where no sha256 is published), with the size when known."""
    text = f"sha256 {remote.sha256}" if remote.sha256 else f"md5 {remote.md5}"
    return text + (f", {remote.size:,} bytes" if remote.size is not None else "")


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`ChecksumMismatchError` (file kept) unless ``path`` has the published size and sha256
    (md5 where no sha256 is published)."""
    path = Path(path)
    if remote.size is not None and path.stat().st_size != remote.size:
        raise ChecksumMismatchError(path, f"{remote.size} bytes", f"{path.stat().st_size} bytes", algorithm="size")
    algorithm, want = ("sha256", remote.sha256) if remote.sha256 else ("md5", remote.md5)
    if not want:
        raise ValueError(f"no checksum recorded for {remote.filename}")
    got = file_digest(path, algorithm)
    if got != want:
        raise ChecksumMismatchError(path, want, got, algorithm=algorithm)


def fetch(remote: RemoteFile, root: Path, url: str | None = None, timeout: float | None = None) -> Path:
    """Download ``remote`` into ``root`` (torchvision's ``download_url``), verify it, return its path.

    The download is written to ``<filename>.part`` (a stale one from an interrupted earlier download is
    replaced) and renamed only once size and checksum match; on a mismatch it is kept for inspection.
    A connection or read that stalls for ``timeout`` seconds (default :data:`TIMEOUT`) fails the download.
    """
    root = Path(root)
    target = root / remote.filename
    part = root / (remote.filename + ".part")
    part.unlink(missing_ok=True)  # our own temporary name, never a file the user placed
    urls = [url] if url else [remote.url, *remote.mirrors]
    errors: list[str] = []
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT if timeout is None else timeout)  # urllib has none: a dead host would hang
    try:
        for u in urls:
            try:
                download_url(u, str(root), filename=part.name, md5=None)
                break
            except (urllib.error.URLError, OSError, RuntimeError, ValueError, http.client.HTTPException) as e:
                errors.append(f"{u}: {type(e).__name__}: {e}")
        else:
            exc = DatasetDownloadError(
                f"could not download {remote.filename}; tried:\n  " + "\n  ".join(errors) + "\n"
                f"Download it by hand ({checksum_text(remote)}) and place it at {target}"
                + (f", or extract it into {root / remote.folder}" if remote.folder else "")
                + "; pass url=... if the host has moved."
            )
            exc.errors = errors  # one "<url>: <error>" per URL tried
            raise exc
    finally:
        socket.setdefaulttimeout(previous)
    verify(part, remote)
    os.replace(part, target)
    return target


# ------------------------------------------------------------------------------------- safe extraction
def _check_name(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
        raise UnsafeArchiveError(
            f"refusing to extract {archive}: member {name!r} would be written outside the target folder "
            f"(absolute path or '..'). The archive is not the published one; nothing was extracted."
        )


def _check_tar_member(m: tarfile.TarInfo, archive: Path) -> None:
    _check_name(m.name, archive)
    if not (m.isfile() or m.isdir()):
        kind = "link" if (m.issym() or m.islnk()) else "special file"
        raise UnsafeArchiveError(
            f"refusing to extract {archive}: member {m.name!r} is a {kind}; only regular files and folders are "
            f"accepted. The archive is not the published one; nothing was extracted."
        )


def _check_zip_member(info: zipfile.ZipInfo, archive: Path) -> None:
    _check_name(info.filename, archive)
    ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the creator stored no file type
    if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(
            f"refusing to extract {archive}: member {info.filename!r} is a link or special file; only regular files "
            f"and folders are accepted. The archive is not the published one; nothing was extracted."
        )


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a .tar(.gz/.xz/.bz2) or .zip into the folder ``dest`` and return it.

    Members are checked before they are written (no absolute paths, no ``..``, no links or device
    files); extraction goes to a staging folder that is moved to ``dest`` on success and removed on
    failure. If the archive holds a single top folder named like ``dest``, its content becomes ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(
            f"cannot extract {archive} into {dest}: the folder exists and is not empty. Complete it by hand or "
            f"move it away, then try again."
        )
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_zip_member(info, archive)
            extract_archive(str(archive), str(staging))  # torchvision helper, after the checks above
        else:
            with tarfile.open(archive, "r:*") as tf:
                for m in tf:  # one pass: check each member, then write it
                    _check_tar_member(m, archive)
                    if hasattr(tarfile, "data_filter"):
                        tf.extract(m, staging, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4
                        tf.extract(m, staging)
        entries = [e for e in staging.iterdir() if not e.name.startswith(".")]
        inner = staging / dest.name
        src = inner if (len(entries) == 1 and inner.is_dir()) else staging
        if dest.exists():
            dest.rmdir()
        os.replace(src, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return dest


T = TypeVar("T")


def locate_or_extract(
    root: Path,
    remote: RemoteFile,
    find: Callable[[], T | None],
    missing: Callable[[], str],
    what: str,
    download: bool = False,
    url: str | None = None,
) -> T:
    """Return ``find()``; else extract the archive placed in ``root`` (checked first; a mismatch raises
    and keeps the file) or, with ``download``, fetch it; else raise DatasetNotFoundError(``missing()``).
    ``what`` names what the extracted archive should have held, for the error if it does not."""
    found = find()
    if found:
        return found
    archive = root / remote.filename
    if not archive.is_file():
        if not download:
            raise DatasetNotFoundError(missing())
        root.mkdir(parents=True, exist_ok=True)
        archive = fetch(remote, root, url=url)
    else:
        verify(archive, remote)  # user-placed archive
    safe_extract(archive, root / remote.folder)
    found = find()
    if not found:
        raise DatasetNotFoundError(f"{archive} was extracted but holds no {what}. " + missing())
    return found
