"""The runs a profile section plans, each with its run folder: PIADE runs for every (class, preset,
n_vectors, seed, flipped reading), then the baselines, as typed run specs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from piade_lib.engine import checkpoints, folders
from piade_lib.engine.config import BaselineSpec, PiadeSpec, RunConfig, RunSpec
from piade_lib.experiments.profiles import Profile, Section

# RunConfig fields a baseline run shares with the section's PIADE runs (same task, same test set).
_BASELINE_TASK_FIELDS = (
    "protocol",
    "seed",
    "image_size",
    "data_root",
    "limit_train",
    "limit_test",
    "n_bootstrap",
    "device",
    "threads",
)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a section: its typed run spec, the folder it lives in, and the reading it flips
    (readings sections). Picklable, so an executor can send it to another process or machine."""

    section: str
    spec: RunSpec
    run_dir: Path
    flip: str | None = None  # the reading flipped to the other preset's value (readings sections)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def normal_class(self) -> str:
        return self.spec.normal_class

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def preset(self) -> str | None:
        return self.spec.preset if isinstance(self.spec, PiadeSpec) else None

    @property
    def n_vectors(self) -> int | None:
        return self.spec.n_vectors if isinstance(self.spec, PiadeSpec) else None

    @property
    def baseline(self) -> str | None:
        return self.spec.baseline if isinstance(self.spec, BaselineSpec) else None

    @property
    def finished_files(self) -> tuple[str, ...]:
        return (
            ("scores.csv", "metrics.json")
            if self.kind == "baseline"
            else ("checkpoints/" + checkpoints.FINAL, "metrics.json")
        )

    def is_finished(self) -> bool:
        return folders.is_finished(self.run_dir, self.finished_files)


def planned_runs(section: Section, results_root: str | Path) -> list[PlannedRun]:
    """Every run of ``section`` with its run folder, PIADE runs first, then baselines."""
    plan: list[PlannedRun] = []
    for key in section.run_keys():
        spec = RunConfig(**section.run_config(*key)).resolved()
        plan.append(PlannedRun(section.name, spec, spec.run_dir(results_root), flip=key[4]))
    for cls in section.class_names():
        for name in section.baselines:
            for seed in section.seed_list():
                kw = baseline_kwargs(section, cls, name, seed)
                task_params = kw.pop("protocol_params", {})
                spec = BaselineSpec.build(**kw, **task_params)
                plan.append(PlannedRun(section.name, spec, spec.run_dir(results_root)))
    return plan


def profile_runs(
    prof: Profile, results_root: str | Path, keep: Callable[[PlannedRun], bool] = lambda p: True
) -> list[PlannedRun]:
    """The planned runs of every section of ``prof`` that ``keep`` selects, in plan order, each run
    folder once (a run that two sections share is listed once)."""
    runs = [p for s in prof.sections.values() for p in planned_runs(s, results_root) if keep(p)]
    return list({p.run_dir: p for p in runs}.values())


def baseline_kwargs(section: Section, normal_class: str, name: str, seed: int | None = None) -> dict[str, Any]:
    """Arguments of :meth:`BaselineSpec.build` for one class (and seed) of a section
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


def plan_frame(section: Section, results_root: str | Path) -> pd.DataFrame:
    """The section's runs as a table: class, kind, variant, finished, run folder."""
    rows = [
        {
            "section": p.section,
            "class": p.normal_class,
            "kind": p.kind,
            "variant": p.variant,
            "seed": p.seed,
            "finished": p.is_finished(),
            "run_dir": str(p.run_dir),
        }
        for p in planned_runs(section, results_root)
    ]
    return pd.DataFrame(rows)
