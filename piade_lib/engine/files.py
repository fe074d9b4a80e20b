"""Atomic writes: every file of a run folder is written to a temporary file in the same folder,
fsynced and ``os.replace``-d into place, so an interrupted process leaves the old file or the new one,
never half a file. JSON, CSV and ``torch.save`` go through :func:`atomic_write`; ``to_jsonable`` is the
one converter to JSON-safe values.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


# --------------------------------------------------------------------------------------------
# JSON / hashing
# --------------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, Paths -> str; recursive."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike, writer: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``writer(fileobj)`` into a temporary file in the same folder, fsync it
    and ``os.replace`` it into place. On any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, mode) as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            written = os.path.getsize(tmp)
            os.unlink(tmp)
        except OSError:
            written = None
        named = _named_os_error(exc, path, written)
        if named is None:
            raise
        raise named from exc
    _fsync_dir(path.parent)
    return path


# the operating system's errors of a disk with no room left (a full disk, a full quota)
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or while handling (``__cause__``, else ``__context__``), and so
    on, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def _size(n: int) -> str:
    """Bytes as KiB, MiB or GiB, one decimal."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def _named_os_error(exc: BaseException, path: Path, written: int | None = None) -> OSError | None:
    """The operating system's error behind a failed write of ``path``, naming ``path`` (not the temporary
    file) and, for a full disk, the space left there; None when the failure is not the operating system's
    (or is an interrupt). ``written``: the bytes of the removed temporary file. ``torch.save`` reports a
    full disk as a RuntimeError of its zip writer ("unexpected pos ...") with the OSError as its context;
    a write error of a file object names no file at all."""
    if not isinstance(exc, Exception):
        return None
    err = next((e for e in exception_chain(exc) if isinstance(e, (OSError, KeyboardInterrupt))), None)
    if not isinstance(err, OSError) or err.errno is None or (err is exc and err.filename == str(path)):
        return None
    message = err.strerror or os.strerror(err.errno)
    if err.errno in FULL_DISK_ERRNOS:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            pass
        else:
            part = f" after {_size(written)} of it" if written else ""
            message += f"{part} ({_size(free)} free there once the partial file was removed)"
    return OSError(err.errno, message, str(path))  # OSError(errno, ...) is the errno's subclass (PermissionError, ...)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-finite floats become null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a corrupt one raises ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it or move the run folder aside") from exc


def write_csv(path: str | os.PathLike, frame: Any) -> Path:
    """Atomically write a pandas DataFrame as CSV (no index)."""
    return atomic_write(path, lambda f: frame.to_csv(f, index=False), mode="w")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


def rename_aside(path: str | os.PathLike, tag: str) -> Path:
    """Rename ``path`` (a file or a folder) to ``<name>.<tag>-<timestamp>`` beside it, never replacing
    anything (``-1``, ``-2``, ... when that name is taken), never deleting. Returns the new path."""
    path = Path(path)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.{tag}-{stamp}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.{tag}-{stamp}-{n}"), n + 1
    os.replace(path, target)
    return target


def link_or_copy_atomic(src: Path, dst: Path) -> Path:
    """Make ``dst`` a hard link to ``src`` (no second copy of the data), replacing ``dst`` atomically;
    falls back to an atomic copy where hard links are not supported."""
    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write(dst, lambda f: f.write(src.read_bytes()))
    _fsync_dir(dst.parent)
    return dst
