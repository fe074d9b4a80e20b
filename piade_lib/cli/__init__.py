"""The ``piade`` command: train, evaluate and score with PIADE run folders.

    piade train --dataset digits --class 0 --epochs 2 --no-pretrained
    piade evaluate results/cli/runs/digits-lsa/0/paper-v2
    piade score results/cli/runs/digits-lsa/0/paper-v2 my_images/ --output scores.csv --maps maps/
    piade download mnist --root data

``download`` fetches one of the paper's datasets into the data root, checks its checksums and
unpacks it (see docs/datasets.md). ``train`` is resumable: the same command again returns at once when the run
has finished and
resumes from the last checkpoint when it was interrupted. ``score`` preprocesses new images exactly
like the run's training images (the data package's ``load_image_for_scoring``) and flags the ones
whose total score is above a threshold recorded in the run's metrics.json: by default the 95th
percentile of the total score on the normal *training* images (``--threshold-from test_normal``: on
the normal test images; ``--threshold``: a value of your own); an image that cannot be read gets
empty scores and its reason in the CSV's ``status`` column (``--strict``: stop instead).

Every option is range-checked by the parser (:mod:`piade_lib.cli.args`). Errors are one line
``piade <command>: error: ...``, exit status 2 for bad input and 1 for a failure at run time;
``piade --debug ...`` (or ``PIADE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from collections.abc import Sequence

DEFAULT_OUTPUT = os.path.join("results", "cli")


SUBCOMMANDS = ("train", "evaluate", "score", "download", "profile", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="piade",
        description="PIADE image anomaly detection: train, evaluate, score; download the paper's datasets.",
        epilog="Errors are reported as one line `piade <command>: error: ...`: exit "
        "status 2 for bad input (an argument, a file or folder it names, a profile), "
        "1 for a failure while running (a diverged training, a damaged checkpoint, "
        "a disk that is full or read-only, ...).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback instead of one line (also: environment variable PIADE_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    from piade_lib.cli import download, profile, report, score, train

    for module in (train, score, download, profile, report):
        module.add_parsers(sub)
    return parser


def one_line(message: object) -> str:
    """A (possibly multi-line) error message as one line: indented detail lines are joined with '; '."""
    out = ""
    for line in str(message).splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        out = line if not out else out + (" " if out.endswith((":", ".", ";", ",")) else "; ") + line
    return out


def exit_status(exc: BaseException) -> int | None:
    """2 for bad input, 1 for a failure at run time, None for an error that is not the library's own
    or the operating system's (a bug: its traceback is shown)."""
    from piade_lib.data.errors import PiadeDataError
    from piade_lib.engine.checkpoints import CheckpointError
    from piade_lib.engine.folders import RunConfigMismatchError, RunFolderBusyError
    from piade_lib.model.weights import PretrainedWeightsUnavailable
    from piade_lib.reporting.results import MissingRunsError

    if isinstance(
        exc,
        (
            PiadeDataError,
            RunConfigMismatchError,
            PretrainedWeightsUnavailable,
            FileNotFoundError,
            FileExistsError,
            ValueError,
            KeyError,
        ),
    ):
        return 2  # an argument, or a file, folder, dataset or profile it names, is wrong or missing
    if isinstance(exc, (FloatingPointError, CheckpointError, MissingRunsError, RunFolderBusyError, OSError)):
        return 1  # diverged training, damaged checkpoint, a run folder in use, permission, disk full, ...
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``piade`` console script. Returns the exit status."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PIADE_DEBUG", "") not in ("", "0")
    shown = warnings.showwarning
    if not debug:  # the library's warnings as one line each, like its errors (no file, line or source)
        warnings.showwarning = functools.partial(_show_warning, args.command)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted; nothing half-written was kept. Re-run the same command to resume.", file=sys.stderr)
        return 130
    except Exception as exc:
        status = exit_status(exc)
        if debug or status is None:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
        text = one_line(msg)
        if isinstance(exc, OSError) and text.startswith("[Errno"):  # the operating system's own message
            text = (
                f"{type(exc).__name__}: {text} (fix this and run the same command again: files are written "
                "atomically, so nothing half-written was kept)"
            )
        print(f"piade {args.command}: error: {text or type(exc).__name__}", file=sys.stderr)
        return status
    finally:
        warnings.showwarning = shown


def _show_warning(
    command: str, message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None
) -> None:
    """``warnings.showwarning`` for the command line: ``piade <command>: warning: <message>`` on one line."""
    print(f"piade {command}: warning: {one_line(message)}", file=file or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
