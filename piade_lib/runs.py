"""Run folders: layout, config hashing, atomic writes, checkpoints and provenance.

A run folder is ``<results_root>/runs/<dataset>-<protocol>/<class>/<variant>/`` with variant
``<preset>-v<n_vectors>`` (PIADE) or ``baseline-<name>``. Everything written here is written
atomically (temporary file in the same folder, fsync, ``os.replace``), so an interrupted process
leaves either the old file or the new one, never half a file. Checkpoints are loaded with
``torch.load(..., weights_only=True)``; an unreadable one is reported with a warning and the
previous ``epoch_XXXX.pt`` is used instead.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import uuid
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

# Keys of a run config that change how a run is executed but not what it computes. They are
# recorded in config.json but left out of the config hash, so a run started on one device (or
# with another checkpoint interval, or a moved data folder) can be resumed or skipped on another.
EXECUTION_KEYS = frozenset(
    {"device", "num_workers", "checkpoint_every", "keep_checkpoints", "n_bootstrap", "data_root", "eval_steps"}
)

FINAL = "final.pt"
LAST = "last.pt"
_EPOCH_RE = re.compile(r"^epoch_(\d{4,})\.pt$")


class RunConfigMismatchError(RuntimeError):
    """A run folder already holds a run with a different configuration."""


class CheckpointError(RuntimeError):
    """No readable checkpoint could be found where one was expected."""


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


def run_dir_for(results_root: str | os.PathLike, dataset: str, protocol: str, normal_class: Any,
                variant: str) -> Path:
    """``<results_root>/runs/<dataset>-<protocol>/<class>/<variant>``."""
    return (Path(results_root) / "runs" / f"{safe_name(dataset)}-{safe_name(protocol)}"
            / safe_name(normal_class) / safe_name(variant))


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


# --------------------------------------------------------------------------------------------
# JSON / hashing
# --------------------------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, Paths -> str; recursive."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# Protocol parameters that only say how the data is obtained, not which data (the manifest's
# checksum guards the data itself): left out of the hash like the execution keys.
EXECUTION_PROTOCOL_PARAMS = frozenset({"download"})


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


def config_diff(old: dict[str, Any], new: dict[str, Any], exclude: Iterable[str] = EXECUTION_KEYS,
                prefix: str = "") -> dict[str, tuple[Any, Any]]:
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
# atomic writes
# --------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike, writer: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``writer(fileobj)`` into a temporary file in the same folder, fsync it
    and ``os.replace`` it into place. On any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, mode) as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-finite floats become null)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a corrupt one raises ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it or move the run folder aside") from exc


def write_csv(path: str | os.PathLike, frame: "Any") -> Path:
    """Atomically write a pandas DataFrame as CSV (no index)."""
    return atomic_write(path, lambda f: frame.to_csv(f, index=False), mode="w")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


# --------------------------------------------------------------------------------------------
# run folder lifecycle
# --------------------------------------------------------------------------------------------
def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def move_aside(run_dir: str | os.PathLike) -> Path:
    """Rename ``run_dir`` to ``<run_dir>.old-<timestamp>`` (never deletes). Returns the new path."""
    run_dir = Path(run_dir)
    target = run_dir.with_name(f"{run_dir.name}.old-{_timestamp()}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{_timestamp()}-{n}")
        n += 1
    os.replace(run_dir, target)
    return target


def check_run_dir(run_dir: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> bool:
    """Check an existing ``run_dir`` against ``config`` without writing anything.

    Returns True when the folder holds this configuration (same hash), False when there is no
    (non-empty) folder. A folder holding a different configuration (or files but no config.json)
    raises :class:`RunConfigMismatchError` naming the differing keys, unless ``overwrite`` is true:
    then the old folder is moved aside to ``<folder>.old-<timestamp>`` (never deleted) and False is
    returned.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return False
    if cfg_path.is_file():
        old = read_json(cfg_path)
        old.pop("config_hash", None)
        if config_hash(old) == config_hash(config):
            return True
        diff = config_diff(old, config)
        detail = "\n".join(f"    {k}: {a!r} (in folder) vs {b!r} (requested)" for k, (a, b) in diff.items())
        detail = detail or "    (hash differs)"
    else:
        detail = "    the folder has files but no config.json"
    if not overwrite:
        raise RunConfigMismatchError(
            f"run folder {run_dir} holds a run with a different configuration:\n{detail}\n"
            "Nothing was changed. To keep both, use another results root (--output) or variant; "
            "to replace it, pass overwrite=True (--overwrite), which moves the old folder to "
            f"{run_dir.name}.old-<timestamp> beside it (nothing is deleted).")
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
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run folder (expected config.json, "
                                "written by train_run/run_baseline)")
    cfg = read_json(path)
    cfg.pop("config_hash", None)
    return cfg


def is_finished(run_dir: str | os.PathLike, required: Iterable[str] = ("checkpoints/" + FINAL, "metrics.json")) -> bool:
    """Whether every file of ``required`` exists in ``run_dir`` (PIADE default: final.pt and metrics.json)."""
    run_dir = Path(run_dir)
    return all((run_dir / r).is_file() for r in required)


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
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
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
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
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


def link_or_copy_atomic(src: Path, dst: Path) -> Path:
    """Make ``dst`` a hard link to ``src`` (no second copy of the data), replacing ``dst`` atomically;
    falls back to an atomic copy where hard links are not supported."""
    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write(dst, lambda f: f.write(src.read_bytes()))
    _fsync_dir(dst.parent)
    return dst


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


def _valid(state: Any, config_hash_: str | None, required: Iterable[str]) -> str | None:
    if not isinstance(state, dict):
        return "not a dict"
    missing = [k for k in required if k not in state]
    if missing:
        return f"missing keys {missing}"
    if config_hash_ is not None and state.get("config_hash") != config_hash_:
        return f"config hash {state.get('config_hash')} differs from the run's {config_hash_}"
    return None


def load_latest_checkpoint(ckpt_dir: str | os.PathLike, config_hash_: str | None = None,
                           required: Iterable[str] = ("epoch", "model", "optimizer", "rng"),
                           map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
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
            f"no usable checkpoint in {ckpt_dir}:\n  " + "\n  ".join(problems)
            + "\nMove the folder aside (or pass overwrite=True / --overwrite) to start the run again.")
    return None


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
        commit = subprocess.run([git, "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run([git, "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"], cwd=here,
                                capture_output=True, text=True, timeout=30)
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
    return f"cpu ({platform.machine() or 'unknown'}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


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


def provenance(seed: int, device: str | torch.device, pretrained: bool | None) -> dict[str, Any]:
    """Facts about this process for provenance.json (no hostname, no user name)."""
    return {
        "seed": seed,
        "versions": package_versions(),
        "git": git_info(),
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
