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

from piade_lib.engine import files, folders
from piade_lib.presets import Preset, get_preset


@dataclass
class RunConfig:
    """Everything that defines one PIADE training run (None = take the preset's / dataset's value)."""

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
    checkpoint_every: int = 1
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

    # ------------------------------------------------------------------------------------------
    def preset_obj(self) -> Preset:
        """The Preset object (with ``preset_overrides`` applied)."""
        return get_preset(self.preset, **self.preset_overrides)

    def resolved(self) -> "RunConfig":
        """A copy with every None filled: optimisation values from the preset, protocol and image
        size from the dataset's defaults, the class as its canonical name, the variant name."""
        from piade_lib.data import classes

        p = self.preset_obj()
        protocol, size = dataset_defaults(self.dataset)
        names = [] if self.dataset == "folder" else [str(c) for c in classes(self.dataset)]
        cls = canonical_class(self.normal_class, names, self.dataset)
        for name, value in (("checkpoint_every", self.checkpoint_every), ("n_vectors", self.n_vectors),
                            ("steps", 1 if self.steps is None else self.steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(int(s) < 1 for s in self.eval_steps or []):
            raise ValueError(f"eval_steps must be optimiser steps >= 1, got {list(self.eval_steps)}")
        # a step budget replaces epochs: the epoch count then follows from the training set's size
        epochs = None if self.steps is not None else int(self.epochs if self.epochs is not None else p.epochs)
        return dataclasses.replace(
            self,
            normal_class=cls,
            protocol=self.protocol or protocol,
            image_size=int(self.image_size or size),
            epochs=epochs,
            steps=None if self.steps is None else int(self.steps),
            eval_steps=sorted({int(s) for s in self.eval_steps or []}),
            batch_size=int(self.batch_size or p.batch_size),
            lr=float(self.lr if self.lr is not None else p.lr),
            weight_decay=float(self.weight_decay if self.weight_decay is not None else p.weight_decay),
            protocol_params=dict(self.protocol_params or {}),
            preset_overrides=dict(self.preset_overrides or {}),
            variant=self.variant or folders.piade_variant(self.preset, int(self.n_vectors), int(self.seed)),
        )

    def to_dict(self) -> dict[str, Any]:
        """config.json content: the fields plus the resolved preset (``preset_resolved``)."""
        d = dataclasses.asdict(self)
        d["preset_resolved"] = self.preset_obj().to_dict()
        d["kind"] = "piade"
        return files.to_jsonable(d)

    def run_dir(self, results_root: str | Path) -> Path:
        """The run folder of this config under ``results_root``."""
        r = self.resolved()
        return folders.run_dir_for(results_root, r.dataset, str(r.protocol), r.normal_class, str(r.variant))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """A RunConfig from a dict (e.g. config.json), ignoring keys that are not fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
