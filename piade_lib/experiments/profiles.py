"""Profiles: ``configs/<name>.yaml``, the single source of what a ``run_all.sh`` run does.

A profile names the experiments (its *sections*: ``table2``, ``table3``, ``table4``,
``figure4`` and optional extra ones such as the ICPR version's MNIST), the dataset and protocol
each section uses, the classes, presets, numbers of instantiation vectors, training settings
and baselines. :func:`load_profile` reads and validates one; :func:`notebook_parameters` turns
it into the papermill parameters of each notebook;
:func:`piade_lib.experiments.preflight.check_profile` verifies, before any
training, that its datasets and (if asked for) pretrained weights are available.

Command line (used by ``run_all.sh``)::

    piade profile list
    piade profile check PROFILE          # exit 0 when everything is available
    piade profile prepare PROFILE        # check, then print the results folder
    piade profile params PROFILE NOTEBOOK [--results-root DIR]   # YAML to stdout
    piade profile params PROFILE NB1 NB2 ... --out-dir DIR      # DIR/<notebook>.yaml each

``PROFILE`` is a name from ``configs/`` or a path to a profile YAML file.

Profile schema (see ``configs/quick.yaml`` for a commented example)::

    name: quick
    description: ...
    defaults: {RunConfig fields applied to every run: pretrained, device, seed, epochs, ...}
    sections:
      <section>:                       # table2 | table3 | table4 | figure4 | any other name
        title: ...
        dataset: digits                # a name of piade_lib.data.DATASETS
        protocol: lsa                  # optional; the dataset's default otherwise
        classes: all                   # "all" or a list of class names
        presets: [paper]               # piade_lib.presets.PRESETS names
        n_vectors: [2]                 # [1, 2] for the ablation
        seeds: [0, 1, 2]               # optional; one run per seed (folders <variant>-s<seed>, seed 0 plain)
        flips: [output_activation]     # optional; names of piade_lib.presets.READINGS: one run per reading
                                       #   flipped to the other preset's value (notebook 07)
        baselines: [ocsvm, kde]        # optional, names of piade_lib.engine.baselines
        baseline_params:               # optional; per baseline: epochs (the CAEs) and model parameters, e.g.
          kde: {density: exact}        #   the KDE's exact density (default) or scikit-learn's tree
        paper_table: table2            # optional; the paper table it stands for (default: the section name),
                                       #   or "mnist" for the published one-class MNIST results (LSA)
        <RunConfig fields>: ...        # epochs, batch_size, image_size, protocol_params, ...
    figure3: {n_images: 4}             # optional
    executor:                          # optional; how the runs are executed (PIADE_EXECUTOR overrides kind)
      kind: local                      #   local (default): one after another in this process; ray: one Ray
                                       #   task per run, in parallel (RAY_ADDRESS joins a running cluster)
      num_gpus_per_run: 0.25           #   ray: the GPU share a run asks for when the cluster has GPUs
      num_cpus_per_run: 1              #   ray: the CPUs a run asks for (its intra-op threads)
      max_retries: 3                   #   ray: re-runs of a run whose worker died (it resumes from its checkpoint)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from piade_lib.presets import SEED_MAX

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

# The sections that correspond to the paper's tables / figure (others are extra experiments).
PAPER_SECTIONS = ("table2", "table3", "table4", "figure4")
# Published tables a section may be set beside (paper_table): the paper's, and the one-class MNIST
# results of the methods the LSA paper compares (the ICPR version's MNIST numbers are not public).
REFERENCE_TABLES = PAPER_SECTIONS + ("mnist",)
# The notebooks run_all.sh executes, in order (notebooks/<name>.ipynb); see notebook_parameters().
NOTEBOOKS = (
    "01_data_preparation",
    "02_training",
    "03_evaluation",
    "04_ablation",
    "05_paper_figures",
    "06_convergence",
    "07_readings",
)

# RunConfig fields a profile may set (in `defaults` or in a section): every field of
# piade_lib.engine.config.RunConfig except those the section's structure decides.
_STRUCTURAL = ("dataset", "normal_class", "preset", "n_vectors", "variant")


def run_fields() -> tuple[str, ...]:
    import dataclasses

    from piade_lib.engine.config import RunConfig

    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in _STRUCTURAL)


SECTION_KEYS = (
    "title",
    "dataset",
    "classes",
    "presets",
    "n_vectors",
    "baselines",
    "paper_table",
    "baseline_params",
    "seeds",
    "flips",
)
TOP_FIELDS = ("name", "description", "defaults", "sections", "figure3", "results_root", "executor")
EXECUTOR_KINDS = ("local", "ray")
EXECUTOR_KEYS = ("kind", "num_gpus_per_run", "num_cpus_per_run", "max_retries")


class ProfileError(ValueError):
    """A profile is unknown or malformed."""


class UnknownProfile(ProfileError):
    pass


@dataclass(frozen=True)
class ExecutorSettings:
    """The profile's ``executor`` key: which executor runs its planned runs and what each Ray task asks
    for (see :mod:`piade_lib.experiments.executors`; ``PIADE_EXECUTOR`` overrides ``kind``)."""

    kind: str = "local"  # "local" | "ray"
    num_gpus_per_run: float = 0.25  # asked for only when the Ray cluster has GPUs (and the run's device is not cpu)
    num_cpus_per_run: float = 1
    max_retries: int = 3  # Ray's re-runs of a task whose worker died; an exception raised by a run is not retried


def parse_executor(raw: Any, where: str = "executor") -> ExecutorSettings:
    """Validate a profile's ``executor`` mapping (raises ProfileError naming the key and the valid values)."""
    if raw is None:
        return ExecutorSettings()
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must be a mapping such as {{kind: ray, num_gpus_per_run: 0.25}}, got {raw!r}")
    _check_keys(raw, EXECUTOR_KEYS, where)
    kind = raw.get("kind", "local")
    if kind not in EXECUTOR_KINDS:
        raise ProfileError(f"{where}.kind: unknown executor {kind!r}; valid: {', '.join(EXECUTOR_KINDS)}")

    def number(key: str, default: float, *, positive: bool) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
            raise ProfileError(f"{where}.{key} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
        return value

    gpus = number("num_gpus_per_run", ExecutorSettings.num_gpus_per_run, positive=False)
    if gpus > 1 and gpus != int(gpus):
        raise ProfileError(f"{where}.num_gpus_per_run: a share of one GPU (<= 1) or a whole number of GPUs, got {gpus}")
    cpus = number("num_cpus_per_run", ExecutorSettings.num_cpus_per_run, positive=True)
    retries = raw.get("max_retries", ExecutorSettings.max_retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ProfileError(f"{where}.max_retries must be an integer >= 0, got {retries!r}")
    return ExecutorSettings(kind=str(kind), num_gpus_per_run=gpus, num_cpus_per_run=cpus, max_retries=retries)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def profile_path(profile: str | Path) -> Path:
    """configs/<profile>.yaml for a name; the file itself for a path to a .yaml/.yml file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise UnknownProfile(f"profile file {p} does not exist")
        return p
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise UnknownProfile(
            f"unknown profile {str(profile)!r}; valid profiles: {', '.join(available_profiles())} "
            f"(files configs/*.yaml), or pass the path of a profile .yaml file"
        )
    return path


@dataclass
class Section:
    """One experiment of a profile: a dataset/protocol, classes, model variants, baselines."""

    name: str
    dataset: str
    title: str = ""
    classes: Any = "all"
    presets: list[str] = field(default_factory=lambda: ["paper"])
    n_vectors: list[int] = field(default_factory=lambda: [2])
    baselines: list[str] = field(default_factory=list)
    baseline_params: dict[str, Any] = field(default_factory=dict)
    paper_table: str | None = None
    run: dict[str, Any] = field(default_factory=dict)  # RunConfig fields (defaults merged in)
    seeds: list[int] = field(default_factory=list)  # empty: the run's single seed
    flips: list[str] = field(default_factory=list)  # readings flipped one at a time (presets.READINGS)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)  # the profile's, for run_section

    @property
    def protocol(self) -> str | None:
        return self.run.get("protocol")

    @property
    def is_ablation(self) -> bool:
        return len(self.n_vectors) > 1

    @property
    def is_readings(self) -> bool:
        """A section that flips readings one at a time (notebook 07)."""
        return bool(self.flips)

    @property
    def has_convergence(self) -> bool:
        """Its PIADE runs score the test split at optimiser-step milestones (convergence.csv)."""
        return bool(self.run.get("eval_steps"))

    def seed_list(self) -> list[int]:
        """The section's seeds: ``seeds`` when given, else the run's single ``seed``."""
        return [int(x) for x in self.seeds] if self.seeds else [int(self.run.get("seed", 0))]

    @property
    def paper_dataset(self) -> str | None:
        from piade_lib.paper_results import TABLE_DATASETS

        return TABLE_DATASETS.get(self.paper_table) if self.paper_table else None

    @property
    def is_standin(self) -> bool:
        """True when the section runs on another dataset than the paper's (no paper values apply)."""
        return self.paper_dataset is not None and self.paper_dataset != self.dataset

    def class_names(self) -> list[str]:
        """The section's normal classes as strings (``all`` expands through the data package)."""
        if self.classes == "all":
            from piade_lib.data import classes

            return [str(c) for c in classes(self.dataset)]
        return [str(c) for c in self.classes]

    def run_keys(self) -> list[tuple[str, str, int, int, str | None]]:
        """(class, preset, n_vectors, seed, flip) of every PIADE run, in that order; ``flip`` None is
        the preset as it is, then one run per reading of ``flips``."""
        return [
            (cls, preset, int(nv), seed, flip)
            for cls in self.class_names()
            for preset in self.presets
            for nv in self.n_vectors
            for seed in self.seed_list()
            for flip in [None, *self.flips]
        ]

    def run_configs(self) -> list[dict[str, Any]]:
        """RunConfig keyword arguments, one dict per :meth:`run_keys` entry."""
        return [self.run_config(*key) for key in self.run_keys()]

    def run_config(self, cls: str, preset: str, nv: int, seed: int, flip: str | None = None) -> dict[str, Any]:
        """RunConfig keyword arguments of one run of the section."""
        from piade_lib.engine.folders import piade_variant
        from piade_lib.presets import RUN_LEVEL_FIELDS, reading_values

        kw = copy.deepcopy(self.run)
        kw.update(dataset=self.dataset, normal_class=cls, preset=preset, n_vectors=int(nv), seed=int(seed))
        if flip is not None:
            values = reading_values(flip, preset)
            overrides = dict(kw.get("preset_overrides") or {})
            for f, v in values.items():
                if f in RUN_LEVEL_FIELDS:
                    kw[f] = v
                else:
                    overrides[f] = list(v) if isinstance(v, tuple) else v
            kw["preset_overrides"] = overrides
            kw["variant"] = piade_variant(preset, int(nv), int(seed), flip)
        return kw


@dataclass
class Profile:
    name: str
    description: str
    sections: dict[str, Section]
    figure3: dict[str, Any]
    path: Path
    results_root: str
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    @property
    def pretrained(self) -> bool:
        return any(s.run.get("pretrained", False) for s in self.sections.values())

    def table_sections(self) -> list[str]:
        """Sections trained and evaluated by 02/03 (all but the 1-vs-2-vectors ablation and the readings)."""
        return [n for n, s in self.sections.items() if not s.is_ablation and not s.is_readings]

    def ablation_sections(self) -> list[str]:
        return [n for n, s in self.sections.items() if s.is_ablation]

    def readings_sections(self) -> list[str]:
        return [n for n, s in self.sections.items() if s.is_readings]

    def convergence_sections(self) -> list[str]:
        return [n for n, s in self.sections.items() if s.has_convergence]

    def summary(self):
        """One row per section: what runs, on what, stand-in or not (a pandas DataFrame)."""
        import pandas as pd

        rows = []
        for n, s in self.sections.items():
            rows.append(
                {
                    "section": n,
                    "title": s.title,
                    "dataset": s.dataset,
                    "protocol": s.protocol or "(default)",
                    "paper dataset": s.paper_dataset or "",
                    "stand-in": s.is_standin,
                    "classes": "all" if s.classes == "all" else len(s.classes),
                    "presets": ", ".join(s.presets),
                    "n_vectors": ", ".join(map(str, s.n_vectors)),
                    "epochs": s.run.get("epochs") if s.run.get("steps") is None else None,
                    "steps": s.run.get("steps"),
                    "batch_size": s.run.get("batch_size"),
                    "seeds": ", ".join(map(str, s.seed_list())),
                    "flips": len(s.flips),
                    "pretrained": s.run.get("pretrained", False),
                    "baselines": ", ".join(s.baselines),
                }
            )
        return pd.DataFrame(rows).set_index("section")


def _as_list(value: Any, what: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int)):
        return [value]
    raise ProfileError(f"{what} must be a list, got {value!r}")


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def parse_profile(raw: dict[str, Any], path: Path) -> Profile:
    """Validate a profile's parsed YAML and return a :class:`Profile` (raises ProfileError)."""
    where = str(path)
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: a profile must be a YAML mapping")
    _check_keys(raw, TOP_FIELDS, where)
    name = raw.get("name") or path.stem
    defaults = raw.get("defaults") or {}
    fields = run_fields()
    _check_keys(defaults, fields, f"{where}: defaults")
    sections_raw = raw.get("sections")
    if not sections_raw or not isinstance(sections_raw, dict):
        raise ProfileError(f"{where}: 'sections' must be a non-empty mapping of section name -> settings")

    executor = parse_executor(raw.get("executor"), f"{where}: executor")
    sections: dict[str, Section] = {}
    for sname, sraw in sections_raw.items():
        sections[sname] = _parse_section(sname, sraw, f"{where}: sections.{sname}", defaults, fields, executor)
    figure3 = raw.get("figure3") or {}
    if not isinstance(figure3, dict):
        raise ProfileError(f"{where}: figure3 must be a mapping such as {{n_images: 4}}, got {figure3!r}")
    figure3 = dict(figure3)
    _check_keys(figure3, ("n_images",), f"{where}: figure3")
    n_images = figure3.get("n_images", 4)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ProfileError(
            f"{where}: figure3.n_images={n_images!r} is not an integer >= 1 (the examples Figure 3 shows per "
            "dataset); set it to e.g. 4"
        )
    results_root = str(raw.get("results_root") or f"results/{name}")
    prof = Profile(
        name=name,
        description=str(raw.get("description", "")).strip(),
        sections=sections,
        figure3=figure3,
        path=path,
        results_root=results_root,
        executor=executor,
    )
    _validate_against_library(prof)
    _check_shared_runs(prof)
    return prof


def _parse_section(
    sname: str, sraw: Any, w: str, defaults: dict[str, Any], fields: tuple[str, ...], executor: ExecutorSettings
) -> Section:
    """Validate one section's settings (``w`` names it in errors) and return its :class:`Section`."""
    if not isinstance(sraw, dict):
        raise ProfileError(f"{w} must be a mapping")
    _check_keys(sraw, SECTION_KEYS + fields, w)
    if "dataset" not in sraw:
        raise ProfileError(f"{w}: 'dataset' is required")
    run = copy.deepcopy(defaults)
    run.update({k: copy.deepcopy(v) for k, v in sraw.items() if k in fields})
    run.setdefault("protocol_params", {})
    presets, n_vectors = _presets_and_vectors(sraw, w)
    classes, paper_table = _classes_and_table(sname, sraw, w)
    seeds, flips = _seeds_and_flips(sraw, w)
    return Section(
        name=sname,
        dataset=str(sraw["dataset"]),
        title=str(sraw.get("title", sname)),
        classes=classes,
        presets=presets,
        n_vectors=n_vectors,
        baselines=[str(b) for b in _as_list(sraw.get("baselines", []), f"{w}.baselines")],
        baseline_params=dict(sraw.get("baseline_params") or {}),
        paper_table=paper_table,
        run=run,
        seeds=seeds,
        flips=flips,
        executor=executor,
    )


def _presets_and_vectors(sraw: dict[str, Any], w: str) -> tuple[list[str], list[int]]:
    """A section's ``presets`` and ``n_vectors``, validated."""
    from piade_lib.presets import PRESETS

    presets = [str(p) for p in _as_list(sraw.get("presets", ["paper"]), f"{w}.presets")]
    for p in presets:
        if p not in PRESETS:
            raise ProfileError(f"{w}: unknown preset {p!r}; valid presets: {sorted(PRESETS)}")
    n_vectors = [int(v) for v in _as_list(sraw.get("n_vectors", [2]), f"{w}.n_vectors")]
    if any(v < 1 for v in n_vectors):
        raise ProfileError(f"{w}: n_vectors must be >= 1, got {n_vectors}")
    return presets, n_vectors


def _classes_and_table(sname: str, sraw: dict[str, Any], w: str) -> tuple[Any, str | None]:
    """A section's ``classes`` ("all" or a non-empty list) and ``paper_table``, validated."""
    classes = sraw.get("classes", "all")
    if classes != "all":
        classes = [str(c) for c in _as_list(classes, f"{w}.classes")]
        if not classes:
            raise ProfileError(f"{w}: 'classes' is empty")
    paper_table = sraw.get("paper_table", sname if sname in PAPER_SECTIONS else None)
    if paper_table is not None and paper_table not in REFERENCE_TABLES:
        raise ProfileError(f"{w}: paper_table must be one of {list(REFERENCE_TABLES)} or null, got {paper_table!r}")
    return classes, paper_table


def _seeds_and_flips(sraw: dict[str, Any], w: str) -> tuple[list[int], list[str]]:
    """A section's ``seeds`` and ``flips``, validated."""
    from piade_lib.presets import READINGS

    seeds = _as_list(sraw.get("seeds", []), f"{w}.seeds")
    if any(not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= SEED_MAX for x in seeds) or len(
        set(seeds)
    ) != len(seeds):
        raise ProfileError(f"{w}: seeds must be distinct integers in [0, {SEED_MAX}], got {seeds}")
    flips = [str(f) for f in _as_list(sraw.get("flips", []), f"{w}.flips")]
    bad = [f for f in flips if f not in READINGS]
    if bad:
        raise ProfileError(f"{w}: unknown reading(s) {bad} in flips; valid readings: {sorted(READINGS)}")
    return seeds, flips


def _check_shared_runs(prof: Profile) -> None:
    """Sections may share run folders (e.g. Table 3 and Figure 4's two-vector runs) only with the
    same settings; otherwise the engine would refuse the second one mid-run. Checked up front."""
    from piade_lib.data import DATASETS
    from piade_lib.engine.folders import EXECUTION_KEYS

    owner: dict[tuple, tuple[str, dict]] = {}
    for s in prof.sections.values():
        protocol = s.protocol or DATASETS[s.dataset].default_protocol
        settings = {k: v for k, v in s.run.items() if k not in EXECUTION_KEYS and k not in ("protocol", "seed")}
        for kw in s.run_configs():
            if kw.get("variant"):  # flipped readings: their settings differ from the section's on purpose
                continue
            key = (s.dataset, protocol, kw["normal_class"], kw["preset"], kw["n_vectors"], kw["seed"])
            if key in owner and owner[key][1] != settings:
                other, theirs = owner[key]
                diff = {
                    k: (theirs.get(k), settings.get(k))
                    for k in set(theirs) | set(settings)
                    if theirs.get(k) != settings.get(k)
                }
                raise ProfileError(
                    f"{prof.path}: sections {other!r} and {s.name!r} both train {s.dataset}/{kw['normal_class']} "
                    f"{kw['preset']} with {kw['n_vectors']} vector(s), in the same run folder, but with different "
                    f"settings {diff} ({other} vs {s.name}). Give them the same settings (the run is then shared) "
                    "or use another seed in one of them."
                )
            owner.setdefault(key, (s.name, settings))


def _validate_against_library(prof: Profile) -> None:
    """Check dataset, protocol, class and baseline names against the modules that define them."""
    from piade_lib.data import DATASETS
    from piade_lib.engine.baselines import BASELINES, KDE_DENSITIES

    for s in prof.sections.values():
        w = f"{prof.path}: sections.{s.name}"
        spec = DATASETS.get(s.dataset)
        if spec is None:
            raise ProfileError(f"{w}: unknown dataset {s.dataset!r}; valid datasets: {sorted(DATASETS)}")
        if s.protocol is not None and s.protocol not in spec.protocols:
            raise ProfileError(f"{w}: unknown protocol {s.protocol!r} for {s.dataset}; valid: {sorted(spec.protocols)}")
        if s.classes != "all" and spec.classes:
            bad = [c for c in s.classes if c not in spec.classes]
            if bad:
                raise ProfileError(f"{w}: unknown class(es) {bad} of {s.dataset}; valid classes: {list(spec.classes)}")
        for b in s.baselines:
            if b not in BASELINES:
                raise ProfileError(f"{w}: unknown baseline {b!r}; valid baselines: {sorted(BASELINES)}")
        unknown = sorted(set(s.baseline_params) - set(s.baselines))
        if unknown:
            raise ProfileError(f"{w}: baseline_params for {unknown}, which are not in its baselines {s.baselines}")
        density = (s.baseline_params.get("kde") or {}).get("density", "exact")
        if density not in KDE_DENSITIES:
            raise ProfileError(
                f"{w}: baseline_params.kde.density must be one of {list(KDE_DENSITIES)}, got {density!r}"
            )
        validate_presets(s, w)


# RunConfig fields a profile may set whose range the engine does not check when it resolves a config
# (the preset-level ones, lr / weight_decay / batch_size / epochs, use the preset's own checks).
# field -> (lowest, highest or None)
_RUN_RANGES: dict[str, tuple[int, int | None]] = {
    "seed": (0, SEED_MAX),
    "n_bootstrap": (0, None),
    "keep_checkpoints": (0, None),
    "limit_train": (2, None),
    "limit_test": (1, None),
    "num_workers": (0, None),
}
# the devices a profile may name (as the engine's resolve_device reads them); whether this machine has
# them is checked by the pre-flight check (preflight.check_profile), not here: a profile stays loadable
# (e.g. for reports) on a machine without its GPU
DEVICES_TEXT = "auto, cpu, cuda, cuda:N (N = a GPU index, 0 the first), mps"


def device_problem(value: Any) -> str | None:
    """Why ``value`` is not a device a run accepts (None when it is one)."""
    if isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", value):
        return None
    return f"device={value!r} is not a device; valid: {DEVICES_TEXT}"


def _data_problems(s: Section) -> list[str]:
    """``protocol_params`` names and ``image_size`` checked against the data package (no data is read)."""
    from piade_lib.data import DATASETS, PiadeDataError
    from piade_lib.data.base import resolve_params
    from piade_lib.data.transforms import resolve_image_size

    problems: list[str] = []
    params = s.run.get("protocol_params") or {}
    spec = DATASETS.get(s.dataset)
    protocol = s.protocol or (spec.default_protocol if spec else None)
    if not isinstance(params, dict):
        problems.append(f"protocol_params must be a mapping of parameter -> value, got {params!r}")
    elif spec is not None and protocol in spec.protocols:
        try:
            resolve_params(s.dataset, protocol, params, spec.protocols[protocol])
        except PiadeDataError as exc:
            problems.append(f"protocol_params: {exc}")
    if spec is not None and s.run.get("image_size") is not None:
        try:
            resolve_image_size(s.dataset, s.run["image_size"])
        except PiadeDataError as exc:
            problems.append(str(exc))
        except (TypeError, ValueError):
            problems.append(f"image_size={s.run['image_size']!r} is not an image size; use 32 or 120")
    return problems


def validate_presets(s: Section, w: str) -> None:
    """Build every preset of the section as its runs will (with ``preset_overrides`` and each flip),
    so that a bad value is refused now, naming the section, the field and the valid values, rather
    than after the earlier sections have trained."""
    from piade_lib.engine.config import RunConfig
    from piade_lib.presets import (
        RETIRED_FIELDS,
        RUN_LEVEL_FIELDS,
        PresetError,
        field_problem,
        unknown_fields_message,
    )

    overrides = s.run.get("preset_overrides") or {}
    if not isinstance(overrides, dict):
        raise ProfileError(f"{w}: preset_overrides must be a mapping of preset field -> value, got {overrides!r}")
    retired = sorted(set(overrides) & set(RETIRED_FIELDS))
    if retired:
        raise ProfileError(f"{w}: preset_overrides: {unknown_fields_message(retired)}")
    problems = [p for f in RUN_LEVEL_FIELDS if s.run.get(f) is not None and (p := field_problem(f, s.run[f]))]
    for f, (low, high) in _RUN_RANGES.items():
        v = s.run.get(f)
        if v is not None and (
            not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high)
        ):
            problems.append(f"{f}={v!r} is not an integer " + (f">= {low}" if high is None else f"in [{low}, {high}]"))
    if "device" in s.run and (p := device_problem(s.run["device"])):
        problems.append(p)
    problems += _data_problems(s)
    if problems:
        raise ProfileError(f"{w}: " + "; ".join(problems))
    # every (preset, n_vectors, flip) as the engine will resolve it: catches e.g. a misspelt
    # preset_overrides field, decode_vector: longst or checkpoint_every: 0 now
    first = s.class_names()[0]
    for cls, preset, nv, seed, flip in s.run_keys():
        if cls != first:
            continue
        kw = s.run_config(cls, preset, nv, seed, flip)
        try:
            RunConfig(**kw).resolved()
        except PresetError as exc:
            named = "; ".join(exc.problems)
            if any(f"{k}=" in named or f"'{k}'" in named for k in overrides):
                source = "preset_overrides"
            else:
                source = f"flip {flip}" if flip else f"preset {preset}"
            raise ProfileError(f"{w}: {source}: {named} (preset {preset})") from exc
        except (KeyError, ValueError, TypeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ProfileError(f"{w} (preset {preset}, {nv} vector(s)): {msg}") from exc


def load_profile(profile: str | Path) -> Profile:
    """Load and validate ``configs/<profile>.yaml`` (or a profile YAML path)."""
    path = profile_path(profile)
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_profile(raw, path)


def profile_ref(prof: Profile) -> str:
    """How notebooks refer to the profile: its name when it lives in configs/, else its path."""
    try:
        if prof.path.resolve().parent == CONFIG_DIR.resolve():
            return prof.path.stem
    except OSError:
        pass
    return str(prof.path)


def notebook_parameters(profile: str | Path | Profile, notebook: str, results_root: str | None = None) -> dict:
    """The papermill parameters of one notebook (its stem or file name) for a profile.

    Every notebook gets ``profile`` (name or YAML path) and ``results_root``; the training and
    evaluation notebooks get the table sections to handle, the ablation notebook its sections,
    and the figures notebook the Figure 3 settings. Everything else the notebooks read from the
    profile through :func:`load_profile`, so the YAML stays the one source of truth.
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    stem = Path(notebook).stem
    if stem not in NOTEBOOKS:
        raise ProfileError(f"no parameters defined for notebook {notebook!r}; known notebooks: {list(NOTEBOOKS)}")
    params: dict[str, Any] = {"profile": profile_ref(prof), "results_root": str(results_root or prof.results_root)}
    if stem in ("01_data_preparation",):
        params["sections"] = list(prof.sections)
    elif stem in ("02_training", "03_evaluation"):
        params["sections"] = prof.table_sections()
    elif stem == "04_ablation":
        params["sections"] = prof.ablation_sections()
    elif stem == "05_paper_figures":
        params["sections"] = [n for n in prof.sections if n not in prof.readings_sections()]
        params["figure3_images"] = int(prof.figure3.get("n_images", 4))
    elif stem == "06_convergence":
        params["sections"] = [n for n in prof.sections if n not in prof.readings_sections()]
    elif stem == "07_readings":
        params["sections"] = prof.readings_sections()
    return params


def notebook_setup(profile: str | Path, notebook: str, **given: Any) -> tuple[Profile, dict[str, Any]]:
    """What a notebook's first cell calls: load the profile and return ``(profile, parameters)``,
    the parameters being :func:`notebook_parameters` with the notebook's own non-None parameter
    values (as papermill injected them) taking precedence.

    The working directory becomes the repository root, so relative paths (``results/<profile>``,
    the default data root ``./data``) mean the same as for ``run_all.sh``, also when the notebook
    is opened interactively from ``notebooks/``.
    """
    import os

    if Path.cwd().resolve() != REPO_ROOT.resolve() and (REPO_ROOT / "configs").is_dir():
        os.chdir(REPO_ROOT)
    prof = load_profile(profile)
    params = notebook_parameters(prof, notebook, given.get("results_root"))
    params.update({k: v for k, v in given.items() if v is not None})
    return prof, params
