"""``piade profile list|check|params|prepare``: what ``run_all.sh`` asks of a profile before it runs the notebooks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from piade_lib.cli import args as A


def add_parsers(sub: Any) -> None:
    ap = sub.add_parser(
        "profile",
        help="list, check or prepare a run profile (configs/<name>.yaml)",
        description="Profiles are the run plans of run_all.sh (configs/<name>.yaml). `check` "
        "validates a profile (its keys, its preset values, its device, its datasets and weights) without "
        "training anything; `params` prints a notebook's papermill parameters; `prepare` checks, then "
        "prints the results folder.",
    )
    ps = ap.add_subparsers(
        dest="profile_command", required=True, metavar="{list,check,params,prepare}", help="what to do with the profile"
    )
    ps.add_parser("list", help="print the valid profile names")
    c = ps.add_parser("check", help="check that a profile is valid and its datasets and weights are available")
    c.add_argument("profile", help="a profile name (configs/<name>.yaml) or the path of a profile YAML file")
    p = ps.add_parser("params", help="a notebook's papermill parameters (YAML), printed or written per notebook")
    p.add_argument("profile", help="a profile name or YAML file")
    p.add_argument("notebooks", nargs="+", help="notebook names or paths (e.g. 02_training)")
    p.add_argument("--results-root", default=None, help="results folder (default: the profile's)")
    p.add_argument(
        "--out-dir",
        default=None,
        type=A.output_folder("a folder for the parameter files"),
        help="write <out-dir>/<notebook stem>.yaml for every notebook (the folder is created if missing)",
    )
    pr = ps.add_parser("prepare", help="check (messages on stderr), then print the results folder on stdout")
    pr.add_argument("profile", help="a profile name or YAML file")
    ap.set_defaults(handler=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    import yaml

    from piade_lib.engine import files
    from piade_lib.experiments.preflight import check_profile
    from piade_lib.experiments.profiles import (
        ProfileError,
        available_profiles,
        load_profile,
        notebook_parameters,
    )

    if args.profile_command == "list":
        print("\n".join(available_profiles()))
        return 0
    prof = load_profile(args.profile)
    if args.profile_command == "params":
        if args.out_dir is None and len(args.notebooks) > 1:
            raise ProfileError("several notebooks need --out-dir")
        # every notebook's parameters first: an unknown notebook writes nothing
        texts = [
            (nb, yaml.safe_dump(notebook_parameters(prof, nb, args.results_root), sort_keys=False))
            for nb in args.notebooks
        ]
        for nb, text in texts:
            if args.out_dir is None:
                print(text, end="")
            else:  # the folder (and its parents) is created when missing
                files.atomic_write_text(Path(args.out_dir, f"{Path(nb).stem}.yaml"), text)
        return 0
    problems = check_profile(prof)
    if problems:
        print(f"[piade] profile {prof.name!r} cannot run: {len(problems)} problem(s).\n", file=sys.stderr)
        for i, msg in enumerate(problems, 1):
            print(f"{i}. {msg}\n", file=sys.stderr)
        print("Nothing was trained. See README.md ('Reproducing the paper') and docs/datasets.md.", file=sys.stderr)
        return 1
    print(
        f"[piade] profile {prof.name!r}: datasets and weights available "
        f"({', '.join(sorted({s.dataset for s in prof.sections.values()}))}; "
        f"pretrained={'yes' if prof.pretrained else 'no'}); {_disk_line(prof)}",
        file=sys.stderr if args.profile_command == "prepare" else sys.stdout,
    )
    if args.profile_command == "prepare":
        print(prof.results_root)
    return 0


def _disk_line(prof: Any) -> str:
    """What the profile's unfinished runs will take on the results folder's disk, and what is free there."""
    from piade_lib.experiments import disk

    need = disk.profile_disk_need(prof, disk.results_root(prof))
    if not need.n_runs:
        return "every PIADE run finished"
    return (
        f"its {need.n_runs} unfinished PIADE run(s) need about {disk.size_text(need.total)} of disk, "
        f"{disk.size_text(need.free)} free there"
    )
