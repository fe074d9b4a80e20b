"""The disk a profile's PIADE runs will take where they write, against the space free there (pre-flight).

A PIADE run writes epoch checkpoints while it trains (the model, Adam's two moments, the loss's
weights: about three times the model) and keeps its final weights (the model and the loss) once it has
finished; the profile runner then deletes its resume checkpoints
(:func:`~piade_lib.experiments.runner.prune_resume_checkpoints`). So the disk a profile needs is the
final weights of every unfinished run, plus the checkpoints of the runs training at once: with
``keep_checkpoints: k`` a run holds ``k`` of them and writes the next before it deletes the oldest,
so ``k + 1`` (``k = 0`` keeps every one: at most one per epoch). Sizes come from the models built on
PyTorch's ``meta`` device (shapes only: no memory, no weights); the files are larger by their zip
headers, the history and the RNG states, a fraction of a percent (``tests/test_disk.py``). Baselines
are not counted: their files are small.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from piade_lib.engine import checkpoints, folders
from piade_lib.engine.config import PiadeSpec
from piade_lib.experiments.plan import PlannedRun, profile_runs
from piade_lib.experiments.profiles import Profile

SKIP_ENV = "PIADE_DISK_CHECK"  # "0": skip the check (the estimate is refused wrongly, or space is freed meanwhile)


@dataclass(frozen=True)
class RunFiles:
    """Bytes of one run's final weights and of one of its epoch checkpoints, and how many checkpoints it
    holds at most while it trains."""

    final: int
    checkpoint: int
    checkpoints_at_once: int

    @property
    def peak(self) -> int:
        """The most the run holds while it trains: its checkpoints, then its final weights beside them."""
        return self.checkpoints_at_once * self.checkpoint + self.final


@dataclass(frozen=True)
class DiskNeed:
    """What the unfinished PIADE runs of a profile will add to the disk of ``folder``."""

    folder: Path
    n_runs: int
    final: int  # every unfinished run's final weights: they stay
    in_flight: int  # the most that the runs training at once hold beyond that (checkpoints)
    at_once: int
    free: int

    @property
    def total(self) -> int:
        return self.final + self.in_flight


@functools.lru_cache(maxsize=64)
def _model_bytes(preset_key: tuple, image_size: int, n_vectors: int) -> tuple[int, int, int]:
    """(model state, trainable parameters, loss state) in bytes, from the model built on the meta device."""
    import torch

    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import build_model
    from piade_lib.presets import get_preset

    name, overrides = preset_key
    preset = get_preset(name, **dict(overrides))
    with torch.device("meta"):
        model = build_model(preset, image_size=image_size, n_vectors=n_vectors, pretrained=False)
        loss = PiadeLoss(preset=preset, pretrained=False)

    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    trainable = size(p for p in model.parameters() if p.requires_grad)
    return size(model.state_dict().values()), trainable, size(loss.state_dict().values())


def run_files(spec: PiadeSpec) -> RunFiles:
    """The sizes of ``spec``'s final weights and epoch checkpoints, and how many checkpoints it holds."""
    key = (spec.preset, tuple(sorted(spec.preset_overrides.items())))
    model, trainable, loss = _model_bytes(key, int(spec.image_size), int(spec.n_vectors))
    keep = int(spec.keep_checkpoints)
    if keep > 0:
        at_once = keep + 1  # the next one is written before the oldest is deleted
    else:  # every one kept: at most one per epoch (a step budget has at most as many epochs as steps)
        epochs = int(spec.epochs if spec.epochs is not None else spec.steps)
        at_once = math.ceil(epochs / spec.checkpoint_every) if spec.checkpoint_every else epochs
    return RunFiles(final=model + loss, checkpoint=model + 2 * trainable + loss, checkpoints_at_once=at_once)


def _existing_bytes(run_dir: Path) -> int:
    ckpt = run_dir / "checkpoints"
    if not ckpt.is_dir():
        return 0
    return sum(p.stat().st_size for p in ckpt.glob("*.pt") if p.is_file() and p.name != checkpoints.LAST)


def results_root(prof: Profile) -> str:
    """Where ``prof``'s results go: ``$PIADE_RESULTS`` (as ``run_all.sh`` takes it), else the profile's."""
    return os.environ.get("PIADE_RESULTS") or str(prof.results_root)


def free_bytes(folder: str | os.PathLike) -> tuple[Path, int]:
    """The space free for ``folder``, measured at its nearest existing ancestor (it may not exist yet)."""
    here = Path(folder).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    return here, shutil.disk_usage(here).free


def runs_at_once(prof: Profile, n_runs: int) -> int:
    """How many runs train at once on this machine: one under the local executor; under Ray, as many as
    this machine's GPUs (or CPUs, for runs without one) hold at the profile's request per run."""
    from piade_lib.experiments.executors import ENV_VAR

    if (os.environ.get(ENV_VAR, "").strip() or prof.executor.kind) != "ray":
        return 1
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and prof.executor.num_gpus_per_run > 0:
        fit = gpus / prof.executor.num_gpus_per_run
    else:
        fit = (os.cpu_count() or 1) / max(prof.executor.num_cpus_per_run, 1e-9)
    return max(1, min(n_runs, int(fit)))


def profile_disk_need(prof: Profile, results_root: str | os.PathLike) -> DiskNeed:
    """What the unfinished PIADE runs of ``prof`` will add under ``results_root`` (see the module's text).
    A run that has checkpoints already needs only the rest of its peak."""
    runs: list[PlannedRun] = [
        p for p in profile_runs(prof, results_root, lambda p: p.kind == "piade") if not folders.is_finished(p.run_dir)
    ]
    finals, extra = 0, []
    for p in runs:
        f = run_files(p.spec)
        finals += f.final
        extra.append(max(0, f.peak - f.final - _existing_bytes(p.run_dir)))
    at_once = runs_at_once(prof, len(runs)) if runs else 0
    where, free = free_bytes(results_root)
    return DiskNeed(where, len(runs), finals, sum(sorted(extra)[-at_once:]), at_once, free)


def size_text(n: int) -> str:
    """Bytes as MB or GB (decimal, as disks are sold), one decimal."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def disk_problem(prof: Profile, results_root: str | os.PathLike) -> str | None:
    """A problem (one message) when ``prof``'s results cannot be written where they go: a folder on the way
    that is a file or may not be written (a read-only disk, permissions), or less free space than its runs
    need (not checked when ``$PIADE_DISK_CHECK`` is ``0``); None when they can."""
    where, _ = free_bytes(results_root)
    fix = f"give the results another folder: PIADE_RESULTS=/a/folder/you/may/write ./run_all.sh {prof.name}"
    if not where.is_dir():
        return f"the results folder {results_root} cannot be created: {where} is a file; {fix}"
    if not os.access(where, os.W_OK | os.X_OK):
        return (
            f"the results folder {results_root} cannot be written: {where} is not writable (a read-only disk, "
            f"or its permissions); {fix}"
        )
    if os.environ.get(SKIP_ENV, "").strip() == "0":
        return None
    need = profile_disk_need(prof, results_root)
    if need.total <= need.free:
        return None
    return (
        f"not enough disk for the runs of profile {prof.name!r} in {results_root}: its {need.n_runs} unfinished "
        f"PIADE run(s) need about {size_text(need.total)} ({size_text(need.final)} of final weights that stay, "
        f"plus {size_text(need.in_flight)} of checkpoints while {need.at_once} run(s) train at once), and "
        f"{size_text(need.free)} is free there ({need.folder}). Free some space, or write the results "
        f"elsewhere with PIADE_RESULTS=/a/larger/disk ./run_all.sh {prof.name}; lower keep_checkpoints to hold "
        f"fewer checkpoints per run; or skip this estimate with {SKIP_ENV}=0"
    )
