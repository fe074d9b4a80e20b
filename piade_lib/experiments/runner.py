"""Execute a section's planned runs through the engine. Finished runs are skipped and interrupted
ones resumed by the engine, so calling these again continues where a previous call stopped.

>>> from piade_lib import experiments
>>> from piade_lib.experiments import profiles
>>> prof = profiles.load_profile("quick")
>>> dirs = experiments.run_section(prof.sections["table2"], "results/quick")
"""
from __future__ import annotations

import time
from pathlib import Path

from piade_lib.engine import checkpoints, folders
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


def run_section(section: Section, results_root: str | Path, *, progress: bool = False, verbose: bool = True,
                baselines: bool = True, prune: bool = True, bar: bool = True) -> list[Path]:
    """Train/evaluate (or skip when finished) every run of ``section``; returns the run folders.

    ``verbose`` prints one line per run (what, and how long it took); ``bar`` shows a progress bar
    counting the section's finished runs (a widget in Jupyter); ``progress`` shows the engine's
    per-epoch progress bars too; ``prune`` removes a finished run's resume checkpoints (see
    :func:`prune_resume_checkpoints`)."""
    from tqdm.auto import tqdm

    plan = planned_runs(section, results_root)
    if not baselines:
        plan = [p for p in plan if p.kind == "piade"]
    done: list[Path] = []
    counter = tqdm(total=len(plan), desc=f"{section.name}: runs", unit="run", disable=not bar)
    for i, p in enumerate(plan, 1):
        t0 = time.time()
        status = "done" if p.is_finished() else "running"
        run_dir = execute_planned(p, results_root, progress=progress, prune=prune)
        if verbose:
            note = "skipped (finished before)" if status == "done" else f"{time.time() - t0:.0f} s"
            print(f"[{section.name} {i}/{len(plan)}] {section.dataset}/{p.normal_class} {p.variant}: {note}",
                  flush=True)
        done.append(run_dir)
        counter.update()
    counter.close()
    return done


def run_sections(profile: Profile, names: list[str], results_root: str | Path, *,
                 progress: bool = False, verbose: bool = True) -> dict[str, list[Path]]:
    """:func:`run_section` for several sections of a profile."""
    out = {}
    for name in names:
        if name not in profile.sections:
            raise KeyError(f"profile {profile.name!r} has no section {name!r}; its sections: {list(profile.sections)}")
        out[name] = run_section(profile.sections[name], results_root, progress=progress, verbose=verbose)
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
