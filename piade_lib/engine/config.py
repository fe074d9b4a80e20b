"""The configuration of one PIADE run (:class:`RunConfig`) and the dataset facts it resolves against.

Unset values (None) come from the preset (Table 1 of the paper, or the released code's values) and
from the dataset's defaults; :meth:`RunConfig.resolved` fills them, and :meth:`RunConfig.to_dict` is
what ``config.json`` holds. :func:`canonical_class` is the one resolver of class names and indices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from piade_lib.engine import cpu_threads, files, folders
from piade_lib.engine.compile_modes import compile_mode
from piade_lib.presets import Preset, get_preset


@dataclass
class RunConfig:
    """What a user asks for: one PIADE training run (None = take the preset's / dataset's value).

    :meth:`resolved` turns it into a :class:`PiadeSpec`, the typed run spec the engine executes."""

    dataset: str = "digits"
    normal_class: str | int = "0"
    protocol: str | None = None
    preset: str = "paper"
    n_vectors: int = 2
    image_size: int | None = None
    epochs: int | None = None
    steps: int | None = None  # optimiser-step budget; when set it replaces epochs (see resolved())
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    pretrained: bool = False
    device: str = "auto"
    checkpoint_every: int | None = None  # epochs between checkpoints; None: by wall clock (checkpoint_minutes)
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 2
    data_root: str | None = None
    protocol_params: dict[str, Any] = field(default_factory=dict)
    n_bootstrap: int = 1000
    limit_train: int | None = None
    limit_test: int | None = None
    num_workers: int = 0
    amp: bool = True
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    # optimiser steps at which the model is scored on the test split during training
    # (convergence.csv); an execution setting: it does not change what is trained
    eval_steps: list[int] = field(default_factory=list)
    # torch.compile the step's forward pass and loss as one graph: false, true (torch's default mode) or a
    # mode of engine/compile_modes.py COMPILE_MODES ("reduce-overhead": CUDA graphs). An execution setting; CUDA only
    compile: bool | str = False
    # the training step's arithmetic (engine/precision.py: auto, fp32, bf16, fp16); like the device, an
    # execution setting: it changes rounding, not what is trained
    precision: str = "auto"
    # CPU threads the run computes with (engine/cpu_threads.py); None: the process's count (all cores
    # locally, the task's CPUs under Ray). An execution setting, but on a CPU it changes float rounding
    threads: int | None = None

    def preset_obj(self) -> Preset:
        """The Preset object (with ``preset_overrides`` applied)."""
        return get_preset(self.preset, **self.preset_overrides)

    def resolved(self) -> PiadeSpec:
        """The run spec: every None filled (optimisation values from the preset, protocol and image size
        from the dataset's defaults, the class as its canonical name, the variant name), values checked."""
        from piade_lib.data import classes

        p = self.preset_obj()
        protocol, size = dataset_defaults(self.dataset)
        names = [] if self.dataset == "folder" else [str(c) for c in classes(self.dataset)]
        cls = canonical_class(self.normal_class, names, self.dataset)
        for name, value, low in (
            ("checkpoint_every", self.checkpoint_every, 1),
            ("n_vectors", self.n_vectors, 1),
            ("steps", self.steps, 1),
            ("epochs", self.epochs, 1),
            ("batch_size", self.batch_size, 2),
            ("seed", self.seed, 0),
            ("n_bootstrap", self.n_bootstrap, 0),
            ("keep_checkpoints", self.keep_checkpoints, 0),
            ("limit_train", self.limit_train, 2),
            ("limit_test", self.limit_test, 1),
        ):
            if value is not None and int(value) < low:  # an untrained or unscored "finished" run is never saved
                raise ValueError(f"{name} must be >= {low}, got {value}")
        from piade_lib.engine.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        cpu_threads.check(self.threads)
        if not self.checkpoint_minutes > 0:
            raise ValueError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        if any(int(s) < 1 for s in self.eval_steps or []):
            raise ValueError(f"eval_steps must be optimiser steps >= 1, got {list(self.eval_steps)}")
        # a step budget replaces epochs: the epoch count then follows from the training set's size
        epochs = None if self.steps is not None else int(self.epochs if self.epochs is not None else p.epochs)
        return PiadeSpec(
            dataset=self.dataset,
            normal_class=cls,
            protocol=self.protocol or protocol,
            preset=self.preset,
            n_vectors=int(self.n_vectors),
            image_size=int(self.image_size or size),
            epochs=epochs,
            steps=None if self.steps is None else int(self.steps),
            batch_size=int(self.batch_size or p.batch_size),
            lr=float(self.lr if self.lr is not None else p.lr),
            weight_decay=float(self.weight_decay if self.weight_decay is not None else p.weight_decay),
            seed=int(self.seed),
            pretrained=bool(self.pretrained),
            device=str(self.device),
            checkpoint_every=None if self.checkpoint_every is None else int(self.checkpoint_every),
            checkpoint_minutes=float(self.checkpoint_minutes),
            keep_checkpoints=int(self.keep_checkpoints),
            data_root=self.data_root,
            protocol_params=dict(self.protocol_params or {}),
            n_bootstrap=int(self.n_bootstrap),
            limit_train=self.limit_train,
            limit_test=self.limit_test,
            num_workers=int(self.num_workers),
            amp=bool(self.amp),
            preset_overrides=dict(self.preset_overrides or {}),
            variant=self.variant or folders.piade_variant(self.preset, int(self.n_vectors), int(self.seed)),
            eval_steps=tuple(sorted({int(s) for s in self.eval_steps or []})),
            compile=compile_mode(self.compile) or False,
            precision=str(self.precision),
            threads=self.threads,
        )

    def run_dir(self, results_root: str | Path) -> Path:
        """The run folder of this config under ``results_root``."""
        return self.resolved().run_dir(results_root)

    def to_dict(self) -> dict[str, Any]:
        """config.json of this run (resolved)."""
        return self.resolved().to_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """A RunConfig from a dict (e.g. config.json), ignoring keys that are not fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class PiadeSpec:
    """A resolved PIADE run: every value concrete (see :meth:`RunConfig.resolved`). ``epochs`` is None
    exactly when ``steps`` sets the budget. ``to_dict()`` is config.json."""

    dataset: str
    normal_class: str
    protocol: str
    preset: str
    n_vectors: int
    image_size: int
    epochs: int | None
    steps: int | None
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    pretrained: bool
    device: str
    checkpoint_every: int | None
    checkpoint_minutes: float
    keep_checkpoints: int
    data_root: str | None
    protocol_params: dict[str, Any]
    n_bootstrap: int
    limit_train: int | None
    limit_test: int | None
    num_workers: int
    amp: bool
    preset_overrides: dict[str, Any]
    variant: str
    eval_steps: tuple[int, ...]
    compile: bool | str  # False, or a torch.compile mode
    precision: str
    threads: int | None = None

    kind = "piade"

    def preset_obj(self) -> Preset:
        return get_preset(self.preset, **self.preset_overrides)

    def resolved(self) -> PiadeSpec:
        return self

    def to_dict(self) -> dict[str, Any]:
        """config.json content: the fields plus the resolved preset (``preset_resolved``)."""
        d = dataclasses.asdict(self)
        d["preset_resolved"] = self.preset_obj().to_dict()
        d["kind"] = self.kind
        return files.to_jsonable(d)

    def run_dir(self, results_root: str | Path) -> Path:
        return folders.run_dir_for(results_root, self.dataset, self.protocol, self.normal_class, self.variant)


@dataclass(frozen=True)
class BaselineSpec:
    """A resolved baseline run (OC-SVM, KDE, convolutional autoencoders) on the same one-class task as
    the PIADE runs of its section. ``params`` are the model's parameters (``epochs`` for the CAEs)."""

    baseline: str
    dataset: str
    normal_class: str
    protocol: str
    seed: int
    image_size: int
    preset: str
    protocol_params: dict[str, Any]
    limit_train: int | None
    limit_test: int | None
    params: dict[str, Any]
    n_bootstrap: int
    device: str
    data_root: str | None
    threads: int | None = None  # as RunConfig.threads

    kind = "baseline"

    @classmethod
    def build(
        cls,
        name: str,
        dataset: str,
        normal_class: str | int,
        protocol: str | None = None,
        seed: int = 0,
        image_size: int | None = None,
        epochs: int = 100,
        *,
        preset: str = "paper",
        data_root: str | None = None,
        limit_train: int | None = None,
        limit_test: int | None = None,
        n_bootstrap: int = 1000,
        device: str = "auto",
        threads: int | None = None,
        params: dict[str, Any] | None = None,
        **task_params: Any,
    ) -> BaselineSpec:
        """The spec of baseline ``name`` with the dataset's defaults filled (``task_params`` go to
        ``one_class_task``; ``epochs`` only matters for the autoencoders)."""
        from piade_lib.data import classes
        from piade_lib.engine.baselines import BASELINES, check_kde_density

        if name not in BASELINES:
            raise KeyError(f"unknown baseline {name!r}; valid baselines: {sorted(BASELINES)}")
        default_protocol, default_size = dataset_defaults(dataset)
        p = dict(params or {})
        if name.startswith("cae_"):
            p["epochs"] = int(epochs)
        if name == "kde":
            # recorded in config.json: a KDE run folder made before the exact density (no "density")
            # no longer matches its plan, and the mismatch error names it, rather than its old numbers
            # being reused silently (engine/baselines.py)
            p["density"] = check_kde_density(p.get("density", "exact"))
        names = [] if dataset == "folder" else [str(c) for c in classes(dataset)]
        return cls(
            baseline=name,
            dataset=dataset,
            normal_class=canonical_class(normal_class, names, dataset),
            protocol=protocol or default_protocol,
            seed=int(seed),
            image_size=int(image_size or default_size),
            preset=preset,
            protocol_params=dict(task_params),
            limit_train=limit_train,
            limit_test=limit_test,
            params=p,
            n_bootstrap=int(n_bootstrap),
            device=device,
            data_root=data_root,
            threads=cpu_threads.check(threads),
        )

    @property
    def variant(self) -> str:
        return folders.baseline_variant(self.baseline, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """config.json content."""
        d = dataclasses.asdict(self)
        return files.to_jsonable({"kind": self.kind, **d})

    def run_dir(self, results_root: str | Path) -> Path:
        return folders.run_dir_for(results_root, self.dataset, self.protocol, self.normal_class, self.variant)


RunSpec = PiadeSpec | BaselineSpec


def spec_from_config(config: dict[str, Any]) -> RunSpec:
    """The run spec of a config.json (PIADE or baseline)."""
    if config.get("kind") == "baseline":
        names = {f.name for f in dataclasses.fields(BaselineSpec)}
        return BaselineSpec(**{k: v for k, v in config.items() if k in names})
    return RunConfig.from_dict(config).resolved()


# --------------------------------------------------------------------------------------------
# data helpers
# --------------------------------------------------------------------------------------------
def dataset_defaults(dataset: str) -> tuple[str, int]:
    """(default protocol, image size) of ``dataset`` from the data package."""
    from piade_lib import data

    try:
        info = data.DATASETS[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset {dataset!r}; valid datasets: {sorted(data.DATASETS)}") from None
    protocol = _first_attr(info, ("default_protocol", "protocol"))
    size = _first_attr(info, ("image_size", "default_image_size", "size"))
    return str(protocol), int(size)


def _first_attr(info: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        if isinstance(info, dict) and n in info:
            return info[n]
        if hasattr(info, n):
            return getattr(info, n)
    raise AttributeError(f"dataset description {info!r} has none of {names}")


def canonical_class(value: str | int, names: list[str], dataset: str) -> str:
    """The class name for ``value``: a name of ``names``, or an int / digit string used as index."""
    s = str(value)
    if not names:  # e.g. "folder": any label names the normal class
        if not s:
            raise ValueError(f"{dataset}: give the normal class a name")
        return s
    if s in names:
        return s
    if isinstance(value, int) or s.lstrip("-").isdigit():
        i = int(s)
        if 0 <= i < len(names):
            return names[i]
    raise ValueError(f"unknown class {value!r} of {dataset}; valid classes: {names} (or an index 0..{len(names) - 1})")
