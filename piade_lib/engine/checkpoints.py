"""Checkpoints and RNG state of a resumable run.

``epoch_XXXX.pt`` files are written atomically and ``last.pt`` points at the newest; they are loaded
with ``torch.load(..., weights_only=True)``; an unreadable one (or one of another configuration) is
skipped with a warning and the previous one is used. RNG states are stored as tensors and plain
types so that ``weights_only`` loading can read them.
"""

from __future__ import annotations

import os
import random
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from piade_lib.engine.files import atomic_torch_save, link_or_copy_atomic, rename_aside

FINAL = "final.pt"
LAST = "last.pt"
_EPOCH_RE = re.compile(r"^epoch_(\d{4,})\.pt$")


class CheckpointError(RuntimeError):
    """No readable checkpoint could be found where one was expected."""


# --------------------------------------------------------------------------------------------
# RNG state (stored as tensors / plain types so torch.load(weights_only=True) can read it)
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA), numpy, python and ``generator``, as tensors/plain types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def epoch_file(epoch: int) -> str:
    """``epoch_XXXX.pt``."""
    return f"epoch_{epoch:04d}.pt"


def _epoch_files(ckpt_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _EPOCH_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(ckpt_dir: str | os.PathLike, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``epoch_XXXX.pt`` atomically, point ``last.pt`` at it (hard link, or copy), and keep the
    newest ``keep`` epoch files (``keep <= 0`` keeps all). ``state`` must hold an int ``epoch``."""
    ckpt_dir = Path(ckpt_dir)
    epoch = int(state["epoch"])
    path = atomic_torch_save(state, ckpt_dir / epoch_file(epoch))
    link_or_copy_atomic(path, ckpt_dir / LAST)
    if keep > 0:
        for _, old in _epoch_files(ckpt_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; errors name the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file: its zip archive ends with the central directory
    (a truncated or empty file does not). Reads the file's end only, not the tensors."""
    return zipfile.is_zipfile(path)


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged file to ``<name>.damaged-<timestamp>`` beside it (kept, never deleted; no longer a
    ``.pt`` file, so nothing loads it as a checkpoint). Returns the new path."""
    return rename_aside(path, "damaged")


def _valid(state: Any, config_hash_: str | None, required: Iterable[str]) -> str | None:
    if not isinstance(state, dict):
        return "not a dict"
    missing = [k for k in required if k not in state]
    if missing:
        return f"missing keys {missing}"
    if config_hash_ is not None and state.get("config_hash") != config_hash_:
        return f"config hash {state.get('config_hash')} differs from the run's {config_hash_}"
    return None


def load_latest_checkpoint(
    ckpt_dir: str | os.PathLike,
    config_hash_: str | None = None,
    required: Iterable[str] = ("epoch", "model", "optimizer", "rng"),
    map_location: Any = "cpu",
) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in ``ckpt_dir`` as ``(state, path)``, or None if there is none.

    Candidates, newest epoch first: ``last.pt`` and every ``epoch_XXXX.pt``. A candidate that cannot
    be read (truncated, corrupt) or does not belong to this run (config hash) is skipped with a
    warning naming it; if files exist but none is usable, :class:`CheckpointError` is raised.
    """
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / LAST
    candidates: list[Path] = [p for _, p in reversed(_epoch_files(ckpt_dir))]
    problems: list[str] = []
    best: tuple[dict[str, Any], Path] | None = None
    if last.is_file():
        try:
            state = load_torch(last, map_location)
            why = _valid(state, config_hash_, required)
            if why is None:
                best = (state, last)
            else:
                problems.append(f"{last}: {why}")
        except CheckpointError as exc:
            problems.append(str(exc))
    for path in candidates:
        epoch = int(_EPOCH_RE.match(path.name).group(1))  # type: ignore[union-attr]
        if best is not None and epoch <= int(best[0]["epoch"]):
            break
        try:
            state = load_torch(path, map_location)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        why = _valid(state, config_hash_, required)
        if why is None:
            best = (state, path)
            break
        problems.append(f"{path}: {why}")
    for msg in problems:
        warnings.warn(f"skipping unusable checkpoint -- {msg}", stacklevel=2)
    if best is not None:
        if problems:
            warnings.warn(f"resuming from {best[1]} (epoch {int(best[0]['epoch'])})", stacklevel=2)
        return best
    if problems:
        raise CheckpointError(
            f"no usable checkpoint in {ckpt_dir}:\n  "
            + "\n  ".join(problems)
            + "\nTo start the run afresh, run the same command again with --overwrite (Python: overwrite=True): "
            "the folder is moved aside, not deleted."
        )
    return None
