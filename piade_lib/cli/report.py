"""``piade report readme``: the results README of a profile, from its tables and run folders."""

from __future__ import annotations

import argparse
from typing import Any

from piade_lib.cli import args as A

WALL_TIME = A.finite_float(0.0, note="seconds")


def add_parsers(sub: Any) -> None:
    ap = sub.add_parser(
        "report",
        help="write reports from a profile's run folders",
        description="Reports are written from run folders and tables only (no model is loaded).",
    )
    rs = ap.add_subparsers(dest="report_command", required=True, metavar="{readme}", help="which report")
    r = rs.add_parser("readme", help="write <results root>/README.md from the tables and run folders")
    r.add_argument("profile", help="a profile name or YAML file")
    r.add_argument(
        "--results-root",
        default=None,
        help="results folder (default: the profile's); it must hold the run folders of ./run_all.sh PROFILE",
    )
    r.add_argument("--wall-time", type=WALL_TIME, default=None, help="seconds run_all.sh took")
    ap.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from piade_lib.experiments.profiles import load_profile
    from piade_lib.reporting.readme import check_results_root, write_results_readme

    prof = load_profile(args.profile)
    root = args.results_root or prof.results_root
    check_results_root(root, prof)
    path = write_results_readme(prof, root, args.wall_time)
    print(f"[piade] wrote {path}")
    return 0
