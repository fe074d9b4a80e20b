"""The ``piade`` command: train, evaluate and score with PIADE run folders.

    piade train --dataset digits --class 0 --epochs 2 --no-pretrained
    piade evaluate results/cli/runs/digits-lsa/0/paper-v2
    piade score results/cli/runs/digits-lsa/0/paper-v2 my_images/ --output scores.csv --maps maps/
    piade download mnist --root data

``download`` fetches one of the paper's datasets into the data root, checks its checksums and
unpacks it (see docs/datasets.md). ``train`` is resumable: the same command again returns at once when the run has finished and
resumes from the last checkpoint when it was interrupted. ``score`` preprocesses new images exactly
like the run's training images (the data package's ``load_image_for_scoring``) and flags the ones
whose total score is above a threshold recorded in the run's metrics.json: by default the 95th
percentile of the total score on the normal *training* images (``--threshold-from test_normal``: on
the normal test images; ``--threshold``: a value of your own).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

DEFAULT_OUTPUT = os.path.join("results", "cli")


SUBCOMMANDS = ("train", "evaluate", "score", "download", "profile", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piade", description="PIADE image anomaly detection: train, evaluate, score; "
                                     "download the paper's datasets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    from piade_lib.cli import download, profile, report, score, train

    for module in (train, score, download, profile, report):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``piade`` console script. Returns the exit status."""
    from piade_lib.data.errors import PiadeDataError
    from piade_lib.engine.checkpoints import CheckpointError
    from piade_lib.engine.folders import RunConfigMismatchError
    from piade_lib.model.weights import PretrainedWeightsUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted; nothing half-written was kept. Re-run the same command to resume.", file=sys.stderr)
        return 130
    except (RunConfigMismatchError, CheckpointError, PretrainedWeightsUnavailable, PiadeDataError,
            FileNotFoundError, FileExistsError, FloatingPointError, ValueError, KeyError) as exc:
        if os.environ.get("PIADE_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"piade {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
