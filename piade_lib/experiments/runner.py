"""Execute a section's planned runs through the engine. Finished runs are skipped and interrupted
ones resumed by the engine, so calling these again continues where a previous call stopped. Where
they execute (this process, or Ray tasks across GPUs and machines) is the executor's business
(:mod:`piade_lib.experiments.executors`).

>>> from piade_lib import experiments
>>> from piade_lib.experiments import profiles
>>> prof = profiles.load_profile("quick")
>>> dirs = experiments.run_section(prof.sections["table2"], "results/quick")
"""

from __future__ import annotations

from pathlib import Path

from piade_lib.engine import checkpoints, folders
from piade_lib.experiments import executors
from piade_lib.experiments.executors import Executor
from piade_lib.experiments.plan import PlannedRun, planned_runs
from piade_lib.experiments.profiles import Profile, Section


def execute_planned(p: PlannedRun, results_root: str | Path, *, progress: bool = False, prune: bool = True) -> Path:
    """Execute one planned run (PIADE or baseline) through the engine's lifecycle: skip it when
    finished, resume it when interrupted, else train and evaluate it. Returns its run folder. This is
    the unit of work an executor sends anywhere (this process, a Ray worker): it needs only ``p`` and
    the results root."""
    from piade_lib.engine.lifecycle import execute

    run_dir = execute(p.spec, results_root, progress=progress)
    if prune and p.kind == "piade":
        prune_resume_checkpoints(run_dir)
    return run_dir


def run_section(
    section: Section,
    results_root: str | Path,
    *,
    progress: bool = False,
    verbose: bool = True,
    baselines: bool = True,
    prune: bool = True,
    bar: bool = True,
    executor: Executor | str | None = None,
) -> list[Path]:
    """Train/evaluate (or skip when finished) every run of ``section``; returns the run folders.

    ``verbose`` prints one line per run (what, and how long it took); ``bar`` shows a progress bar
    counting the section's finished runs (a widget in Jupyter); ``progress`` shows the engine's
    per-epoch progress bars too; ``prune`` removes a finished run's resume checkpoints (see
    :func:`prune_resume_checkpoints`). ``executor`` (an :class:`~piade_lib.experiments.executors.Executor`,
    ``"local"`` or ``"ray"``; default: ``$PIADE_EXECUTOR``, else the profile's ``executor`` key, else
    local) says where the runs execute. A failing run does not stop the others; when all are done,
    :class:`~piade_lib.experiments.executors.RunsFailedError` names the failures."""
    plan = planned_runs(section, results_root)
    if not baselines:
        plan = [p for p in plan if p.kind == "piade"]
    ex = executors.make_executor(executor, section.executor)
    return ex.run(
        plan, results_root, execute_planned, progress=progress, prune=prune, verbose=verbose, bar=bar, desc=section.name
    )


def run_sections(
    profile: Profile,
    names: list[str],
    results_root: str | Path,
    *,
    progress: bool = False,
    verbose: bool = True,
    executor: Executor | str | None = None,
) -> dict[str, list[Path]]:
    """:func:`run_section` for several sections of a profile, as one batch: a parallel executor runs
    the sections' runs side by side, and a run two sections share (same folder) runs once."""
    for name in names:
        if name not in profile.sections:
            raise KeyError(f"profile {profile.name!r} has no section {name!r}; its sections: {list(profile.sections)}")
    plans = {name: planned_runs(profile.sections[name], results_root) for name in names}
    ex = executors.make_executor(executor, profile.executor)
    dirs = ex.run(
        [p for name in names for p in plans[name]],
        results_root,
        execute_planned,
        progress=progress,
        verbose=verbose,
        desc=", ".join(names) or "no sections",
    )
    out: dict[str, list[Path]] = {}
    for name in names:
        out[name], dirs = dirs[: len(plans[name])], dirs[len(plans[name]) :]
    return out


def prune_resume_checkpoints(run_dir: str | Path) -> int:
    """Delete ``checkpoints/last.pt`` and ``epoch_*.pt`` of a *finished* run (final weights and
    metrics written); returns the bytes freed. They only serve to resume an interrupted run, and
    hold the optimizer state too (about 3x the model: 350 MB for a 120x120 paper model), while
    ``final.pt`` (kept) is what evaluation, Figure 3 and ``piade score`` load. A finished run is
    skipped by ``train_run`` without them."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    if not folders.is_finished(run_dir):
        return 0
    freed = 0
    for f in [ckpt / checkpoints.LAST, *ckpt.glob("epoch_*.pt")]:
        if f.is_file():
            freed += f.stat().st_size
            f.unlink()
    return freed
