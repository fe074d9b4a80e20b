"""The runs a profile section plans, each with its run folder: PIADE runs for every (class, preset,
n_vectors, seed, flipped reading), then the baselines, as typed run specs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from piade_lib.engine import checkpoints, folders
from piade_lib.experiments.profiles import Section

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
    from piade_lib.engine.baselines import baseline_config
    from piade_lib.engine.config import RunConfig

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
                variant = folders.baseline_variant(name, seed)
                run_dir = folders.run_dir_for(results_root, section.dataset, config["protocol"], config["normal_class"],
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


def _finished_files(p: PlannedRun) -> tuple[str, ...]:
    return ("checkpoints/" + checkpoints.FINAL, "metrics.json") if p.kind == "piade" else ("scores.csv", "metrics.json")


def plan_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """The section's runs as a table: class, kind, variant, finished, run folder."""
    rows = [{"section": p.section, "class": p.normal_class, "kind": p.kind, "variant": p.variant, "seed": p.seed,
             "finished": folders.is_finished(p.run_dir, _finished_files(p)), "run_dir": str(p.run_dir)}
            for p in planned_runs(section, results_root)]
    return pd.DataFrame(rows)
