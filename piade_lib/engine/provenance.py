"""provenance.json: which code, packages, device and command produced a run, one entry per session
(start, end, wall time, status). No host or user names are recorded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from piade_lib.engine.files import exception_chain, read_json, to_jsonable, write_json


# --------------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------------
def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions of python and the packages a result depends on."""
    import sklearn
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "pytorch-msssim": _version("pytorch-msssim") or _version("pytorch_msssim"),
        "pandas": _version("pandas"),
        "piade_lib": _version("piade_lib"),
    }


def git_info(start: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git repository holding this package (None outside git).

    ``dirty``: tracked files changed since the commit, outside ``results/`` (the outputs being
    written, which are themselves tracked for the quick profile, do not make the code dirty).
    """
    here = Path(start) if start is not None else Path(__file__).resolve().parent
    git = shutil.which("git")
    if git is None:
        return None
    try:
        commit = subprocess.run([git, "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: str | torch.device) -> str:
    """Human-readable name of ``device`` (GPU model, or CPU architecture and cores)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    machine = platform.machine() or "unknown"
    return f"cpu ({machine}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def now_iso() -> str:
    """Local time with offset, ISO 8601, seconds."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _command_line() -> list[str]:
    """sys.argv with the program reduced to its name (no absolute paths)."""
    if not sys.argv or not sys.argv[0]:
        return []
    prog = Path(sys.argv[0]).name
    if prog in ("cli.py", "__main__.py"):
        prog = "piade"
    if "ipykernel" in prog or any("ipykernel" in a for a in sys.argv[:2]):
        return ["jupyter-kernel"]  # a notebook: its argv is a temporary connection file, not a command
    return [prog, *sys.argv[1:]]


def portable(value: Any) -> Any:
    """``value`` as a result file records it: an absolute path is reduced to its file name (no path of the
    machine it ran on), another path becomes a string, a list or tuple is converted element by element."""
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        path = Path(value)
        return path.name if path.is_absolute() else str(path)
    return value


def recorded_args(args: Any, omit: tuple[str, ...] = ()) -> dict[str, Any]:
    """A command's parsed arguments (an ``argparse.Namespace`` or a dict) as a benchmark records them, each
    value :func:`portable`, leaving out the names in ``omit``."""
    items = args.items() if isinstance(args, dict) else vars(args).items()
    return {k: portable(v) for k, v in items if k not in omit}


def _lock_summary() -> dict[str, Any]:
    """The lock file this environment was installed from: its sha256 and whether every pinned version
    is the installed one (see :func:`piade_lib.engine.lockfile.lock_info`)."""
    from piade_lib.engine.lockfile import lock_info

    info = lock_info()
    return {k: info.get(k) for k in ("file", "sha256", "installed_matches", "n_mismatches", "mismatches")}


def code_provenance() -> dict[str, Any]:
    """Which code and packages this process runs: package versions, the lock file, the git commit (also
    recorded by the benchmarks, so that a figure is tied to the code it measured)."""
    return {"versions": package_versions(), "lock": _lock_summary(), "git": git_info()}


def provenance(seed: int, device: str | torch.device, pretrained: bool | None) -> dict[str, Any]:
    """Facts about this process for provenance.json (no hostname, no user name)."""
    return {
        "seed": seed,
        **code_provenance(),
        "device": str(device),
        "device_name": device_name(device),
        "pretrained": pretrained,
        "platform": platform.platform(terse=True),
        "command": _command_line(),
    }


def new_session(**fields: Any) -> dict[str, Any]:
    """A provenance session entry: a unique ``id`` (two sessions may start within one second), the
    start time and ``fields``."""
    return {"id": uuid.uuid4().hex[:12], "started": now_iso(), **fields}


def update_provenance(run_dir: str | os.PathLike, session: dict[str, Any], **facts: Any) -> Path:
    """Merge ``facts`` into provenance.json and append/replace the current ``session`` entry
    (matched by its ``id``, see :func:`new_session`; else by ``started``). ``wall_seconds`` totals all sessions."""
    path = Path(run_dir) / "provenance.json"
    prov: dict[str, Any] = read_json(path) if path.is_file() else {}
    prov.update(to_jsonable(facts))
    key = lambda e: e.get("id", e.get("started"))  # noqa: E731  (entries without an id: by start time)
    sessions = [s for s in prov.get("sessions", []) if key(s) != key(session)]
    sessions.append(to_jsonable(session))
    prov["sessions"] = sessions
    prov["started"] = sessions[0].get("started")
    prov["ended"] = session.get("ended")
    prov["wall_seconds"] = round(sum(float(s.get("wall_seconds") or 0.0) for s in sessions), 3)
    return write_json(path, prov)


def mark_killed_sessions(run_dir: str | os.PathLike) -> int:
    """Sessions still ``"running"`` in provenance.json whose process is gone are recorded as
    ``"killed"``. Called by the holder of the run folder's lock: a running session's process would
    hold that lock, so none of them can be alive. Returns how many were marked."""
    path = Path(run_dir) / "provenance.json"
    if not path.is_file():
        return 0
    prov = read_json(path)
    n = 0
    for s in prov.get("sessions", []):
        if s.get("status") == "running":
            s.update(
                status="killed",
                note=f"its process ended without recording an end (killed or crashed); "
                f"found at {now_iso()} by the next session",
            )
            n += 1
    if n:
        write_json(path, prov)
    return n


class Session:
    """One provenance session of a run folder: written when it starts (status ``"running"``) and
    when it ends (``"finished"``, ``"stopped: <Error>"``, or what the run sets in :attr:`status`)."""

    def __init__(self, run_dir: Path, entry: dict[str, Any]) -> None:
        self.run_dir, self.entry = run_dir, entry
        self.status = "finished"
        self.facts: dict[str, Any] = {}
        self._t0 = time.time()

    def end(self, status: str) -> None:
        self.entry.update(ended=now_iso(), wall_seconds=round(time.time() - self._t0, 3), status=status)
        update_provenance(self.run_dir, self.entry, **self.facts)


def _first_cause(exc: BaseException) -> BaseException:
    """What stopped a session: an interrupt (Ctrl-C, a cancelled Ray task) that another error followed
    while it unwound (e.g. torch.save's zip writer, cut off mid-file, fails in its own clean-up), else
    ``exc`` itself."""
    return next((e for e in exception_chain(exc) if isinstance(e, KeyboardInterrupt)), exc)


@contextlib.contextmanager
def session(run_dir: str | os.PathLike, *, device: Any, seed: int, pretrained: bool | None) -> Iterator[Session]:
    """Open a provenance session in ``run_dir`` (after marking dead sessions as killed) and close it
    with its status, also when the body raises (``"stopped: <Error>"``, then the error goes on)."""
    run_dir = Path(run_dir)
    mark_killed_sessions(run_dir)
    s = Session(
        run_dir, new_session(device=str(device), device_name=device_name(device), status="running", pid=os.getpid())
    )
    update_provenance(run_dir, s.entry, **provenance(seed, device, pretrained))
    try:
        yield s
    except BaseException as exc:
        s.end(f"stopped: {type(_first_cause(exc)).__name__}")
        raise
    s.end(s.status)
