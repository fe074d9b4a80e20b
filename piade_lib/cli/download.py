"""``piade download``: fetch one of the paper's datasets, check its checksums and unpack it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    from piade_lib.data.tasks import DOWNLOADABLE

    d = sub.add_parser(
        "download",
        help="fetch one of the paper's datasets, check its checksums and unpack it",
        description="Download a dataset into the data root, with a progress bar. Every file is "
        "written to <name>.part and renamed only once its published checksum matches (md5 for "
        "cifar10, mnist, fashion_mnist; size and sha256 for mvtec, coil100), so an interrupted or "
        "corrupted download never passes as complete; a mismatching file is kept, not deleted. "
        "Archives are extracted safely (no links, no paths outside the target folder). Files you "
        "placed in the data root by hand are checked and unpacked instead of downloaded, and a "
        "dataset that is already complete is left alone. Without network access the command "
        "stops at once, naming the URLs, the files, their checksums and the folder to put them in.",
        epilog="Layouts, sizes and checksums: docs/datasets.md. The stand-ins digits and textures "
        "ship with scikit-learn and scikit-image: nothing to download.",
    )
    d.add_argument(
        "dataset",
        metavar="NAME",
        choices=DOWNLOADABLE,
        help=f"the dataset: {', '.join(DOWNLOADABLE)} (mvtec is a 4.9 GB archive)",
    )
    d.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="data root to download into (default: $PIADE_DATA, "
        "else ./data); the run_all.sh profiles and `piade train --data-root` read from the same root",
    )
    d.add_argument(
        "--url",
        default=None,
        help="mvtec and coil100 only: download the archive from this URL instead "
        "(the hosts have moved before); it is checked against the same sha256",
    )
    d.set_defaults(handler=cmd_download)


def _check_root(root: Path, given: bool) -> None:
    """The data root must be a folder, or a path that can become one (no file on the way)."""
    base = root
    while not base.exists() and base != base.parent:
        base = base.parent
    if base.exists() and not base.is_dir():
        where = "--root" if given else "the data root ($PIADE_DATA, else ./data)"
        what = "is a file" if base == root else f"cannot be created: {base} is a file"
        raise FileExistsError(
            f"{where} {root} {what}, not a folder; give a folder for the datasets (created if missing)"
        )


def cmd_download(args: argparse.Namespace) -> int:
    from piade_lib.data import data_root
    from piade_lib.data.tasks import download_sources

    droot = data_root(args.root)
    _check_root(droot, args.root is not None)
    folder = download_sources(args.dataset, args.root, url=args.url)[0]
    # the folders this download creates (its dataset folder and the missing ones above it), deepest first
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder = _download(args)
    except BaseException:
        for p in created:  # a failed download leaves no empty folders of its own behind
            try:
                p.rmdir()
            except OSError:  # not empty (a kept .part or a file placed meanwhile) or already gone
                pass
        raise
    print(f"{args.dataset}: ready in {folder} (checksums verified)")
    return 0


def _download(args: argparse.Namespace) -> Path | None:
    """``download``, its unexplained errors (e.g. a full disk) as DatasetDownloadError naming the data root."""
    from piade_lib.data import data_root
    from piade_lib.data.errors import DatasetDownloadError
    from piade_lib.data.tasks import download

    try:
        return download(args.dataset, args.root, url=args.url)
    except (OSError, RuntimeError) as exc:  # anything the data package did not already explain
        if isinstance(exc, (DatasetDownloadError, FileNotFoundError, FileExistsError)):
            raise
        raise DatasetDownloadError(
            f"downloading {args.dataset} into {data_root(args.root)} failed: {type(exc).__name__}: {exc}"
        ) from exc
