"""Run folders: where a run lives and whether a folder holds it.

A run folder is ``<results_root>/runs/<dataset>-<protocol>/<class>/<variant>/`` with variant
``<preset>-v<n_vectors>[+<flip>][-s<seed>]`` (PIADE) or ``baseline-<name>[-s<seed>]``. A folder is
identified by the hash of its ``config.json`` without the execution keys (device, workers, checkpoint
interval...); a folder holding another configuration is refused, or moved aside (never deleted).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from piade_lib.engine.checkpoints import FINAL
from piade_lib.engine.files import read_json, rename_aside, to_jsonable, write_json

# Keys of a run config that change how a run is executed but not what it computes. They are
# recorded in config.json but left out of the config hash, so a run started on one device (or
# with another checkpoint interval, or a moved data folder) can be resumed or skipped on another.
EXECUTION_KEYS = frozenset(
    {
        "device",
        "num_workers",
        "checkpoint_every",
        "checkpoint_minutes",
        "keep_checkpoints",
        "n_bootstrap",
        "data_root",
        "eval_steps",
        "compile",
        "precision",
        "threads",
    }
)


class RunConfigMismatchError(RuntimeError):
    """A run folder already holds a run with a different configuration."""


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------
def safe_name(value: Any) -> str:
    """A string usable as a single path component (class names such as ``metal_nut``, ``0``)."""
    s = str(value).strip()
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", s)
    if not s or s in {".", ".."}:
        raise ValueError(f"cannot make a folder name from {value!r}")
    return s


def run_dir_for(results_root: str | os.PathLike, dataset: str, protocol: str, normal_class: Any, variant: str) -> Path:
    """``<results_root>/runs/<dataset>-<protocol>/<class>/<variant>``."""
    return (
        Path(results_root)
        / "runs"
        / f"{safe_name(dataset)}-{safe_name(protocol)}"
        / safe_name(normal_class)
        / safe_name(variant)
    )


def seed_suffix(seed: int) -> str:
    """``""`` for seed 0 (the single-seed layout), ``-s<seed>`` otherwise."""
    return f"-s{int(seed)}" if int(seed) != 0 else ""


def piade_variant(preset: str, n_vectors: int, seed: int = 0, flip: str | None = None) -> str:
    """Folder name of a PIADE run: ``<preset>-v<n_vectors>[+<flip>][-s<seed>]``; ``flip`` names a
    reading flipped to the other preset's value (see :data:`piade_lib.presets.READINGS`)."""
    return f"{preset}-v{n_vectors}" + (f"+{flip}" if flip else "") + seed_suffix(seed)


def baseline_variant(name: str, seed: int = 0) -> str:
    """Folder name of a baseline run: ``baseline-<name>[-s<seed>]``."""
    return f"baseline-{name}" + seed_suffix(seed)


# Protocol parameters that only say how the data is obtained, not which data (the manifest's
# checksum guards the data itself): left out of the hash like the execution keys.
EXECUTION_PROTOCOL_PARAMS = frozenset({"download", "verify_checksums"})


def _without_execution_params(config: dict[str, Any]) -> dict[str, Any]:
    pp = config.get("protocol_params")
    if isinstance(pp, dict) and EXECUTION_PROTOCOL_PARAMS & set(pp):
        config = {**config, "protocol_params": {k: v for k, v in pp.items() if k not in EXECUTION_PROTOCOL_PARAMS}}
    return config


def config_hash(config: dict[str, Any], exclude: Iterable[str] = EXECUTION_KEYS) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``config`` without ``exclude`` keys
    (and without ``protocol_params["download"]``)."""
    relevant = {k: v for k, v in _without_execution_params(config).items() if k not in set(exclude)}
    blob = json.dumps(to_jsonable(relevant), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_diff(
    old: dict[str, Any], new: dict[str, Any], exclude: Iterable[str] = EXECUTION_KEYS, prefix: str = ""
) -> dict[str, tuple[Any, Any]]:
    """Keys (dotted for nested dicts) whose values differ: ``{key: (old, new)}``."""
    ex = set(exclude)
    out: dict[str, tuple[Any, Any]] = {}
    if not prefix:
        old, new = _without_execution_params(old), _without_execution_params(new)
    old_j, new_j = to_jsonable(old), to_jsonable(new)
    for k in sorted(set(old_j) | set(new_j)):
        if not prefix and k in ex:
            continue
        a, b = old_j.get(k, "<missing>"), new_j.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_diff(a, b, exclude=(), prefix=f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = (a, b)
    return out


# --------------------------------------------------------------------------------------------
# run folder lifecycle
# --------------------------------------------------------------------------------------------
def move_aside(run_dir: str | os.PathLike) -> Path:
    """Rename ``run_dir`` to ``<run_dir>.old-<timestamp>`` (never deletes). Returns the new path."""
    return rename_aside(run_dir, "old")


def check_run_dir(run_dir: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> bool:
    """Check an existing ``run_dir`` against ``config``.

    Returns True when the folder holds this configuration (same hash), False when there is no
    (non-empty) folder. A folder holding a different configuration (or files but no config.json)
    raises :class:`RunConfigMismatchError` naming the differing keys, unless ``overwrite`` is true:
    then the old folder is moved aside to ``<folder>.old-<timestamp>`` (never deleted) and False is
    returned.
    """
    try:
        return inspect_run_dir(run_dir, config) == "same"
    except RunConfigMismatchError:
        if not overwrite:
            raise
    moved = move_aside(run_dir)
    warnings.warn(f"moved the previous run folder {run_dir} aside to {moved}", stacklevel=3)
    return False


def prepare_run_dir(run_dir: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> Path:
    """:func:`check_run_dir`, then create ``run_dir`` with ``config.json`` (and its hash) if needed."""
    run_dir = Path(run_dir)
    if not check_run_dir(run_dir, config, overwrite):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {**config, "config_hash": config_hash(config)})
    return run_dir


def load_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of a run folder (without its ``config_hash``); a clear error if it is missing."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a run folder (expected config.json, written by piade train)"
        )
    cfg = read_json(path)
    missing = [k for k in _CONFIG_KEYS if k not in cfg] if isinstance(cfg, dict) else list(_CONFIG_KEYS)
    if missing:
        found = f"has no {', '.join(missing)}" if isinstance(cfg, dict) else f"holds a JSON {type(cfg).__name__}"
        raise ValueError(
            f"{path} is not a run's configuration (it {found}; piade train writes it with the run): restore it, "
            "or train the run again into another folder"
        )
    cfg.pop("config_hash", None)
    return cfg


_CONFIG_KEYS = ("kind", "dataset", "normal_class", "protocol", "preset", "image_size")  # in every run's config.json


def is_finished(run_dir: str | os.PathLike, required: Iterable[str] = ("checkpoints/" + FINAL, "metrics.json")) -> bool:
    """Whether every file of ``required`` exists in ``run_dir`` (PIADE default: final.pt and metrics.json)."""
    run_dir = Path(run_dir)
    return all((run_dir / r).is_file() for r in required)


def inspect_run_dir(run_dir: str | os.PathLike, config: dict[str, Any]) -> str:
    """What ``run_dir`` holds, without writing anything: ``"absent"`` (no folder, or an empty one) or
    ``"same"`` (this configuration). A folder of another configuration (or files without
    config.json) raises :class:`RunConfigMismatchError` naming the differing keys."""
    run_dir = Path(run_dir)
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return "absent"
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        old = read_json(cfg_path)
        old.pop("config_hash", None)
        if config_hash(old) == config_hash(config):
            return "same"
        diff = config_diff(old, config)
        detail = "\n".join(f"    {k}: {a!r} (in folder) vs {b!r} (requested)" for k, (a, b) in diff.items())
        detail = detail or "    (hash differs)"
    else:
        detail = "    the folder has files but no config.json"
    raise RunConfigMismatchError(
        f"run folder {run_dir} holds a run with a different configuration:\n{detail}\n"
        "Nothing was changed. To keep both, use another results root (--output) or variant; "
        "to replace it, pass --overwrite (Python: overwrite=True), which moves the old folder to "
        f"{run_dir.name}.old-<timestamp> beside it (nothing is deleted)."
    )


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``, from :func:`~piade_lib.engine.files.atomic_write`)
    that a writer killed mid-write left in ``run_dir`` and its ``checkpoints/``. :func:`locked` calls it once it
    holds the folder's lock, when no writer of this folder can be running. Returns what was deleted."""
    run_dir = Path(run_dir)
    stale = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class RunFolderBusyError(RuntimeError):
    """Another process holds the run folder's lock."""


def lock_path(run_dir: str | os.PathLike) -> Path:
    """The lock file of a run folder: ``.<variant>.lock`` beside it (not inside it, so that moving the
    folder aside with --overwrite never moves the lock)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def locked(run_dir: str | os.PathLike, wait: float | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (``filelock``; released when the process ends, also on
    SIGKILL) for the whole train / evaluate / score-writing lifetime. ``wait``: seconds to wait for
    another holder (default ``$PIADE_LOCK_WAIT`` or 0); after that, :class:`RunFolderBusyError`
    names the holder (pid, host, since when). Once held, the temporaries a killed writer left in the folder
    are removed (:func:`remove_stale_temporaries`). Yields the run folder."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_name(path.name + ".holder.json")
    if wait is None:
        wait = float(os.environ.get("PIADE_LOCK_WAIT", "0") or 0)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        who = read_json(holder) if holder.is_file() else {}
        raise RunFolderBusyError(
            f"{run_dir} is in use by another process (pid {who.get('pid', '?')} on {who.get('host', '?')}, "
            f"{who.get('command', '?')}, since {who.get('since', '?')}); nothing was changed. Wait for it to "
            "finish (or set PIADE_LOCK_WAIT=<seconds> to wait), or stop that process first."
        ) from None
    try:
        write_json(
            holder,
            {
                "pid": os.getpid(),
                "host": platform.node(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                # a notebook's kernel has no telling argv: ./run_all.sh names itself in PIADE_RUN_ALL
                "command": os.environ.get("PIADE_RUN_ALL") or " ".join(sys.argv[:3]) or "python",
            },
        )
        remove_stale_temporaries(run_dir)  # of a writer killed mid-write (SIGKILL, power loss): none runs now
        yield run_dir
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
