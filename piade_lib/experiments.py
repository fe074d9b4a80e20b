"""Run the models of one profile section: every (class, preset, n_vectors) PIADE run and every
baseline, through the engine (:func:`piade_lib.train.train_run`,
:func:`piade_lib.baselines.run_baseline`). Finished runs are skipped and interrupted ones resumed
by the engine, so calling these again continues where a previous call stopped.

>>> from piade_lib import profiles, experiments
>>> prof = profiles.load_profile("quick")
>>> dirs = experiments.run_section(prof.sections["table2"], "results/quick")
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import runs
from .profiles import Profile, Section

# RunConfig fields a baseline run shares with the section's PIADE runs (same task, same test set).
_BASELINE_TASK_FIELDS = ("protocol", "seed", "image_size", "data_root", "limit_train", "limit_test",
                         "n_bootstrap", "device")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a section and the folder it lives in."""

    section: str
    normal_class: str
    kind: str  # "piade" | "baseline"
    variant: str  # "<preset>-v<n>" | "baseline-<name>"
    run_dir: Path
    kwargs: dict[str, Any]  # RunConfig fields (piade) or run_baseline arguments (baseline)
    preset: str | None = None
    n_vectors: int | None = None
    baseline: str | None = None
    seed: int = 0
    flip: str | None = None  # the reading flipped to the other preset's value (readings sections)


def planned_runs(section: Section, results_root: str | Path) -> list[PlannedRun]:
    """Every run of ``section`` with its run folder, PIADE runs first, then baselines."""
    from .baselines import baseline_config
    from .train import RunConfig

    plan: list[PlannedRun] = []
    for key in section.run_keys():
        kw = section.run_config(*key)
        cfg = RunConfig(**kw)
        rcfg = cfg.resolved()
        plan.append(PlannedRun(section.name, str(rcfg.normal_class), "piade", str(rcfg.variant), cfg.run_dir(results_root),
                               kw, preset=rcfg.preset, n_vectors=rcfg.n_vectors, seed=key[3], flip=key[4]))
    for cls in section.class_names():
        for name in section.baselines:
            for seed in section.seed_list():
                kw = baseline_kwargs(section, cls, name, seed)
                config = baseline_config(**{k: v for k, v in kw.items() if k != "protocol_params"},
                                         **kw.get("protocol_params", {}))
                variant = runs.baseline_variant(name, seed)
                run_dir = runs.run_dir_for(results_root, section.dataset, config["protocol"], config["normal_class"],
                                           variant)
                plan.append(PlannedRun(section.name, str(config["normal_class"]), "baseline", variant, run_dir, kw,
                                       baseline=name, seed=seed))
    return plan


def baseline_kwargs(section: Section, normal_class: str, name: str, seed: int | None = None) -> dict[str, Any]:
    """Arguments of :func:`piade_lib.baselines.run_baseline` for one class (and seed) of a section
    (the section's task settings; ``baseline_params[name]`` may set ``epochs`` and model parameters)."""
    bp = dict(section.baseline_params.get(name, {}) or {})
    kw: dict[str, Any] = {"name": name, "dataset": section.dataset, "normal_class": normal_class}
    kw.update({k: section.run[k] for k in _BASELINE_TASK_FIELDS if section.run.get(k) is not None})
    if seed is not None:
        kw["seed"] = int(seed)
    if "epochs" in bp:
        kw["epochs"] = int(bp.pop("epochs"))
    if bp:
        kw["params"] = bp
    kw["protocol_params"] = dict(section.run.get("protocol_params") or {})
    return kw


def run_section(section: Section, results_root: str | Path, *, progress: bool = False, verbose: bool = True,
                baselines: bool = True, prune: bool = True, bar: bool = True) -> list[Path]:
    """Train/evaluate (or skip when finished) every run of ``section``; returns the run folders.

    ``verbose`` prints one line per run (what, and how long it took); ``bar`` shows a progress bar
    counting the section's finished runs (a widget in Jupyter); ``progress`` shows the engine's
    per-epoch progress bars too; ``prune`` removes a finished run's resume checkpoints (see
    :func:`prune_resume_checkpoints`)."""
    from tqdm.auto import tqdm

    from .baselines import run_baseline
    from .train import RunConfig, train_run

    plan = planned_runs(section, results_root)
    if not baselines:
        plan = [p for p in plan if p.kind == "piade"]
    done: list[Path] = []
    counter = tqdm(total=len(plan), desc=f"{section.name}: runs", unit="run", disable=not bar)
    for i, p in enumerate(plan, 1):
        t0 = time.time()
        status = "done" if runs.is_finished(p.run_dir, _finished_files(p)) else "running"
        if p.kind == "piade":
            run_dir = train_run(RunConfig(**p.kwargs), results_root, progress=progress)
            if prune:
                prune_resume_checkpoints(run_dir)
        else:
            kw = dict(p.kwargs)
            task_params = kw.pop("protocol_params", {})
            run_dir = run_baseline(results_root=results_root, progress=progress, **kw, **task_params)
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
    if not runs.is_finished(run_dir):
        return 0
    freed = 0
    for f in [ckpt / runs.LAST, *ckpt.glob("epoch_*.pt")]:
        if f.is_file():
            freed += f.stat().st_size
            f.unlink()
    return freed


def _finished_files(p: PlannedRun) -> tuple[str, ...]:
    return ("checkpoints/" + runs.FINAL, "metrics.json") if p.kind == "piade" else ("scores.csv", "metrics.json")


def plan_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """The section's runs as a table: class, kind, variant, finished, run folder."""
    rows = [{"section": p.section, "class": p.normal_class, "kind": p.kind, "variant": p.variant, "seed": p.seed,
             "finished": runs.is_finished(p.run_dir, _finished_files(p)), "run_dir": str(p.run_dir)}
            for p in planned_runs(section, results_root)]
    return pd.DataFrame(rows)
