"""Argument types of the ``piade`` command: each checks its value when the command line is parsed, so
that a bad value is refused at once (exit 2, argparse's one-line ``error: argument --X: ...``) naming
the valid range, before anything is loaded or written."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from piade_lib.engine.compile_modes import COMPILE_MODES
from piade_lib.engine.devices import available_devices, torch_note
from piade_lib.presets import LR_MAX, SEED_MAX


def int_at_least(low: int, note: str = "", high: int | None = None) -> Callable[[str], int]:
    """An integer >= ``low`` (``note`` explains a special value, e.g. "0 = no interval"), and <= ``high``."""
    want = f"an integer >= {low}" + (f" ({note})" if note else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {want}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(
    low: float | None = None,
    *,
    strict: bool = False,
    high: float | None = None,
    note: str = "",
) -> Callable[[str], float]:
    """A finite number, optionally > ``low`` (``strict``) or >= ``low``, and <= ``high``."""
    if high is not None:
        want = f"a finite number in {'(' if strict else '['}{low:g}, {high:.3g}]"
    else:
        want = "a finite number" + ("" if low is None else f" {'>' if strict else '>='} {low:g}")
    want += f" ({note})" if note else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if strict else value < low))
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = want
    return parse


def absolute_path(text: str) -> str:
    """A path as an absolute one (``~`` expanded): what a run records stays valid from any folder."""
    return str(Path(text).expanduser().resolve())


def device(text: str) -> str:
    """A device that exists here (see :func:`available_devices`); ``auto`` always does."""
    if text == "auto":
        return text
    valid = available_devices()
    if text not in valid:
        known = text.split(":", 1)[0] in ("cpu", "cuda", "mps")
        why = "is not available on this machine" if known else "is not a device"
        raise argparse.ArgumentTypeError(
            f"{text!r} {why}; devices that exist here: {', '.join(valid)} ({torch_note()})"
        )
    return text


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parent_chain(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we may write into."""
    base = _first_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(
            f"{str(path)!r} cannot be created: {str(base)!r} is a file, not a folder; give {what} under a folder"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{str(path)!r} cannot be written: the folder {str(base)!r} is not writable; "
            f"give {what} under a folder you may write to"
        )


def output_folder(what: str) -> Callable[[str], str]:
    """A folder to write into: an existing folder, or a path that can become one (not a file)."""

    def parse(text: str) -> str:
        path = Path(text)
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; give {what}")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"the folder {text!r} is not writable; give {what} you may write to")
        else:
            _check_parent_chain(path, what)
        return text

    parse.__name__ = "folder"
    return parse


def output_file(what: str) -> Callable[[str], str]:
    """A file to write: not an existing folder, and inside a folder that exists or can be created."""

    def parse(text: str) -> str:
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(
                f"{text!r} is a folder; give the path of {what}, e.g. {str(path / 'scores.csv')!r}"
            )
        _check_parent_chain(path, what)
        return text

    parse.__name__ = "file"
    return parse


# the ranges of the options, declared once for every subcommand
EPOCHS = int_at_least(1)
STEPS = int_at_least(1)
TRAIN_BATCH = int_at_least(2, "BatchNorm needs 2 images per training batch")
SCORE_BATCH = int_at_least(1)
N_BOOTSTRAP = int_at_least(0, "0 = no interval")
SEED = int_at_least(0, high=SEED_MAX)
LR = finite_float(
    0.0,
    strict=True,
    high=LR_MAX,
    note="above it Adam's first step, 10 x lr, overflows float32",
)
WEIGHT_DECAY = finite_float(0.0)
CHECKPOINT_EVERY = int_at_least(1)
CHECKPOINT_MINUTES = finite_float(0.0, strict=True)
KEEP_CHECKPOINTS = int_at_least(0, "0 = keep all")
LIMIT_TRAIN = int_at_least(2)
LIMIT_TEST = int_at_least(1)
EVAL_STEP = int_at_least(1)
THREADS = int_at_least(1)
THRESHOLD = finite_float()


def add_compile_option(parser: argparse.ArgumentParser) -> None:
    """``--compile [MODE]`` (a run's ``compile``; False when absent), for ``piade train`` and the benchmarks."""
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=False,
        choices=list(COMPILE_MODES),
        metavar="MODE",
        help="torch.compile the training step's forward pass and loss as one graph (CUDA only; compile time is "
        f"paid once per run); MODE: one of {', '.join(COMPILE_MODES)}, torch's default mode when left out; "
        "reduce-overhead replays the step as CUDA graphs (see benchmarks/README.md)",
    )
