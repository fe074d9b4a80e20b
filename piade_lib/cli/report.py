"""``piade report readme``: the results README of a profile, from its tables and run folders."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    ap = sub.add_parser(
        "report",
        help="write reports from a profile's run folders",
        description="Reports are written from run folders and tables only (no model is loaded).",
    )
    rs = ap.add_subparsers(dest="report_command", required=True, metavar="{readme}", help="which report")
    r = rs.add_parser("readme", help="write <results root>/README.md from the tables and run folders")
    r.add_argument("profile", help="a profile name or YAML file")
    r.add_argument("--results-root", default=None, help="results folder (default: the profile's)")
    r.add_argument("--wall-time", type=float, default=None, help="seconds run_all.sh took")
    ap.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from piade_lib.experiments.profiles import load_profile
    from piade_lib.reporting.readme import write_results_readme

    prof = load_profile(args.profile)
    path = write_results_readme(prof, args.results_root or prof.results_root, args.wall_time)
    print(f"[piade] wrote {path}")
    return 0
