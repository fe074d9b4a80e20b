"""Resumable PIADE training runs.

``train_run(RunConfig(...), results_root)`` trains one model on the normal train images of a
one-class task, checkpointing atomically every ``checkpoint_every`` epochs, then scores the test
set (``evaluate.evaluate_run``). Calling it again with the same configuration returns at once when
the run has finished, resumes from the last good checkpoint when it was interrupted, and refuses
(``RunConfigMismatchError``) when the folder holds a different configuration.

Optimisation (Table 1 of the paper; ``authors_code`` preset: the released code): Adam with L2
weight decay (``torch.optim.Adam(weight_decay=...)``), lr 1e-3, weight decay 1e-4 (code 1e-3),
batch 120 (code 60), 400 epochs; shuffled batches, no augmentation. On CUDA the forward pass runs
under ``torch.autocast`` (bf16 where supported, else fp16 with a GradScaler) with channels_last;
the loss is always computed in float32. On the CPU everything is float32.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from . import runs
from .evaluate import TERMS, evaluate_run, resolve_device
from .presets import Preset, get_preset

HISTORY_COLUMNS = ("epoch", "step", "mse", "perceptual", "ssim_loss", "total", "seconds")
CONVERGENCE_COLUMNS = ("step", "epoch", "auc", "mse_auc", "normal_recon_mse", "normal_mean_image_mse",
                       "recon_to_mean_image", "train_seconds")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is left intact."""

    def __init__(self, message: str, epoch: int, batch: int, last_checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.last_checkpoint = last_checkpoint


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
        from .data import classes

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
            variant=self.variant or runs.piade_variant(self.preset, int(self.n_vectors), int(self.seed)),
        )

    def to_dict(self) -> dict[str, Any]:
        """config.json content: the fields plus the resolved preset (``preset_resolved``)."""
        d = dataclasses.asdict(self)
        d["preset_resolved"] = self.preset_obj().to_dict()
        d["kind"] = "piade"
        return runs.to_jsonable(d)

    def run_dir(self, results_root: str | Path) -> Path:
        """The run folder of this config under ``results_root``."""
        r = self.resolved()
        return runs.run_dir_for(results_root, r.dataset, str(r.protocol), r.normal_class, str(r.variant))

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
    from . import data

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


def limit_dataset(ds: Dataset, n: int | None, seed: int, labels: list[int] | None = None) -> Dataset:
    """A seeded subset of at most ``n`` items (original order kept). With ``labels``, stratified:
    each class keeps its share, and at least one item of each class present."""
    total = len(ds)  # type: ignore[arg-type]
    if n is None or n >= total:
        return ds
    if n < 1:
        raise ValueError(f"limit must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if labels is None or len(labels) != total:
        idx = rng.permutation(total)[:n]
    else:
        y = np.asarray(labels)
        picks = []
        values = np.unique(y)
        members_of = [np.flatnonzero(y == v) for v in values]
        ks = [min(max(1, int(round(n * m.size / total))) if n >= len(values) else 1, m.size) for m in members_of]
        # rounding and the minimum of one per class can overshoot n: take the excess from the largest
        # shares (never below one), so that no class is lost to the random trim below
        while n >= len(values) and sum(ks) > n:
            j = int(np.argmax(ks))
            ks[j] -= 1
        for members, k in zip(members_of, ks):
            picks.append(rng.permutation(members)[:k])
        idx = np.concatenate(picks)
        if idx.size > n:
            idx = rng.permutation(idx)[:n]
    return Subset(ds, sorted(int(i) for i in idx))


def task_from_config(config: dict[str, Any]) -> tuple[Any, Dataset, Dataset]:
    """Rebuild ``(task, train, test)`` from a resolved config dict (limits applied)."""
    from .data import one_class_task

    overrides = config.get("preset_overrides") or {}
    preset: str | Preset = get_preset(config["preset"], **overrides) if overrides else config["preset"]
    task = one_class_task(config["dataset"], config["normal_class"], protocol=config.get("protocol"),
                          seed=int(config.get("seed", 0)), root=config.get("data_root"),
                          image_size=config.get("image_size"), preset=preset,
                          **(config.get("protocol_params") or {}))
    seed = int(config.get("seed", 0))
    labels = (getattr(task, "manifest", None) or {}).get("test_labels")
    train = limit_dataset(task.train, config.get("limit_train"), seed)
    test = limit_dataset(task.test, config.get("limit_test"), seed + 1, labels=labels)
    return task, train, test


def _manifest(task: Any, train: Dataset, test: Dataset) -> dict[str, Any]:
    m = dict(getattr(task, "manifest", {}) or {})
    if isinstance(train, Subset) or isinstance(test, Subset):
        m["subset"] = {
            "note": "limit_train/limit_test: only these positions of train_ids/test_ids are used",
            "train_positions": list(map(int, train.indices)) if isinstance(train, Subset) else None,
            "test_positions": list(map(int, test.indices)) if isinstance(test, Subset) else None,
        }
    return m


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def amp_settings(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if device.type != "cuda" or not enabled:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def _history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    return _frame(history, HISTORY_COLUMNS)


def _train_seconds(history: list[dict[str, Any]]) -> float:
    return float(sum(float(h["seconds"]) for h in history))


def budget(rcfg: RunConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, optimiser steps) of a resolved run whose epoch has ``steps_per_epoch`` batches: a
    step budget runs ceil(steps / steps_per_epoch) epochs, the last one cut at the budget."""
    if steps_per_epoch < 1:
        raise ValueError("the training loader yields no batch")
    if rcfg.steps is not None:
        total = int(rcfg.steps)
        return -(-total // steps_per_epoch), total
    epochs = int(rcfg.epochs)  # type: ignore[arg-type]
    return epochs, epochs * steps_per_epoch


class Milestones:
    """Scores the model on the test split at the optimiser steps of ``eval_steps`` (below the
    budget; the final model is scored by the run's evaluation): AUROC of the anomaly score and of
    the MSE term alone, and the normal test images' reconstruction error beside the error of the
    train-mean image. Nothing random is drawn, so a run with milestones trains exactly as one
    without."""

    def __init__(self, rcfg: RunConfig, total_steps: int, test_ds: Dataset, train_ds: Dataset,
                 device: torch.device) -> None:
        self.steps = {int(s) for s in rcfg.eval_steps if int(s) < total_steps}
        self.test_ds, self.train_ds, self.device = test_ds, train_ds, device
        self.batch_size = max(int(rcfg.batch_size or 64), 64)  # type: ignore[arg-type]
        self._mean: torch.Tensor | None = None

    def due(self, step: int) -> bool:
        return step in self.steps

    def evaluate(self, model: torch.nn.Module, loss_fn: torch.nn.Module, step: int, epoch: int,
                 train_seconds: float) -> dict[str, Any]:
        from .evaluate import mean_image, reconstruction_summary, score_dataset

        if self._mean is None:
            self._mean = mean_image(self.train_ds)
        scores = score_dataset(model, loss_fn, self.test_ds, self.batch_size, self.device,
                               reference=self._mean)
        summary = reconstruction_summary(scores)  # type: ignore[arg-type]
        return {"step": step, "epoch": epoch, **summary, "train_seconds": round(train_seconds, 3)}

    @staticmethod
    def final_row(metrics: dict[str, Any], step: int, epoch: int, train_seconds: float) -> dict[str, Any]:
        from .evaluate import RECON_KEYS

        return {"step": step, "epoch": epoch, "auc": metrics.get("auc"),
                "mse_auc": (metrics.get("term_auc") or {}).get("mse"), **{k: metrics.get(k) for k in RECON_KEYS},
                "train_seconds": round(train_seconds, 3)}


def _params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train_run(cfg: RunConfig, results_root: str | Path, progress: bool = True, *, overwrite: bool = False,
              stop_after: int | None = None) -> Path:
    """Train (or resume, or skip) the run described by ``cfg`` under ``results_root``; evaluate it.

    ``stop_after``: leave the loop after that epoch (checkpointed) without finishing, as an
    interruption would; the next call resumes. Returns the run folder.
    """
    from .losses import PiadeLoss
    from .model import build_model, model_from_config

    rcfg = cfg.resolved()
    config = rcfg.to_dict()
    chash = runs.config_hash(config)
    run_dir = rcfg.run_dir(results_root)
    exists = runs.check_run_dir(run_dir, config, overwrite=overwrite)  # raises on another config
    ckpt_dir = run_dir / "checkpoints"
    final_path = ckpt_dir / runs.FINAL

    if exists and runs.is_finished(run_dir):
        metrics = runs.read_json(run_dir / "metrics.json")
        if metrics.get("auc") is not None and int(metrics.get("n_bootstrap", -1)) != int(rcfg.n_bootstrap):
            evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=rcfg.device, progress=progress)
        return run_dir
    device = resolve_device(rcfg.device)
    if exists and final_path.is_file():  # trained, not (fully) evaluated
        evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=device, progress=progress)
        return run_dir
    session: dict[str, Any] = runs.new_session(device=str(device), device_name=runs.device_name(device),
                                               status="running")
    t_session = time.time()

    # ---- data, model, loss: built before anything is written, so that a missing dataset or missing
    # ImageNet weights leave no run folder behind ------------------------------------------------
    runs.seed_everything(rcfg.seed)
    task, train_ds, test_ds = task_from_config(config)
    manifest = _manifest(task, train_ds, test_ds)
    man_path = run_dir / "manifest.json"
    if exists and man_path.is_file():
        old = runs.read_json(man_path)
        if old.get("checksum") != manifest.get("checksum") or old.get("subset") != manifest.get("subset"):
            raise runs.RunConfigMismatchError(
                f"the data of {run_dir} changed since the run started: manifest checksum "
                f"{old.get('checksum')} (in {man_path}) vs {manifest.get('checksum')} now. Restore the data "
                "(see the manifest's train_ids/test_ids) or start afresh with overwrite=True / --overwrite.")
    n_train = len(train_ds)  # type: ignore[arg-type]
    if n_train < 2:
        raise ValueError(f"{rcfg.dataset} class {rcfg.normal_class}: {n_train} training image(s); need at least 2")
    bs = int(rcfg.batch_size)  # type: ignore[arg-type]
    drop_last = n_train > bs and n_train % bs == 1  # a batch of one image cannot train BatchNorm
    generator = torch.Generator().manual_seed(rcfg.seed)
    loader = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=generator, drop_last=drop_last,
                        num_workers=rcfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=rcfg.num_workers > 0)

    resume = runs.load_latest_checkpoint(ckpt_dir, config_hash_=chash) if exists else None
    preset = rcfg.preset_obj()
    if resume is None:
        model = build_model(preset, image_size=int(rcfg.image_size), n_vectors=rcfg.n_vectors,  # type: ignore[arg-type]
                            pretrained=rcfg.pretrained)
        loss_fn = PiadeLoss(preset=preset, pretrained=rcfg.pretrained)
    else:  # no ImageNet download needed: all weights come from the checkpoint
        model = model_from_config(resume[0]["model_config"])
        loss_fn = PiadeLoss(preset=preset, pretrained=False)
    model.to(device)
    loss_fn.to(device)
    amp_dtype, use_scaler = amp_settings(device, rcfg.amp)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=float(rcfg.lr),  # type: ignore[arg-type]
                                 weight_decay=float(rcfg.weight_decay))  # type: ignore[arg-type]
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    # ---- the run folder ------------------------------------------------------------------------
    runs.prepare_run_dir(run_dir, config)
    if not man_path.is_file():
        runs.write_json(man_path, manifest)
    runs.update_provenance(run_dir, session, **runs.provenance(rcfg.seed, device, rcfg.pretrained))

    history: list[dict[str, Any]] = []
    convergence: list[dict[str, Any]] = []
    start_epoch = 0
    last_good: Path | None = None
    last_good_epoch = 0
    if resume is not None:
        state, last_good = resume
        last_good_epoch = int(state["epoch"])
        model.load_state_dict(state["model"])
        if state.get("loss"):
            loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        runs.set_rng_state(state["rng"], generator)
        history = [dict(h) for h in state.get("history", [])]
        convergence = [dict(c) for c in state.get("convergence", [])]
        start_epoch = int(state["epoch"])
        if progress:
            tqdm.write(f"[piade] resuming {run_dir} from {last_good.name} (epoch {start_epoch})")
    session["resumed_from_epoch"] = start_epoch

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "model": model.state_dict(), "model_config": model.config,
                "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_scaler else {}, "rng": runs.rng_state(generator),
                "config_hash": chash, "history": history, "convergence": convergence}

    steps_per_epoch = len(loader)
    epochs, total_steps = budget(rcfg, steps_per_epoch)
    milestones = Milestones(rcfg, total_steps, test_ds, train_ds, device)
    end_epoch = epochs if stop_after is None else min(epochs, int(stop_after))
    bar = tqdm(range(start_epoch + 1, end_epoch + 1), desc=f"{rcfg.dataset}/{rcfg.normal_class} {rcfg.variant}",
               initial=start_epoch, total=epochs, disable=not progress, unit="epoch")
    try:
        for epoch in bar:
            model.train()
            t0 = time.time()
            sums = {t: 0.0 for t in TERMS}
            seen = 0
            eval_seconds = 0.0  # milestone scoring, not counted as training time
            batches = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
            for b, batch in enumerate(batches, start=1):
                step = (epoch - 1) * steps_per_epoch + b
                if step > total_steps:  # a step budget ends inside the last epoch
                    break
                x = batch["image"].to(device, torch.float32, non_blocking=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    recon = model(x).reconstruction
                terms = loss_fn.per_image(recon.float(), x)
                loss = terms["total"].mean()
                sums_t = torch.stack([terms[t].detach().float().sum() for t in TERMS]).tolist()  # one sync
                values = dict(zip(TERMS, sums_t))
                if not all(math.isfinite(v) for v in values.values()):
                    good = (f"the last good checkpoint is {last_good} (epoch {last_good_epoch}), left intact"
                            if last_good is not None else "no checkpoint was written yet")
                    raise NonFiniteLossError(
                        f"non-finite training loss in {run_dir} at epoch {epoch}, batch {b} (batch sums: "
                        + ", ".join(f"{k}={v}" for k, v in values.items()) + f"); {good}. Nothing was "
                        "overwritten; re-running resumes from that checkpoint. To change settings instead, "
                        "e.g. a lower learning rate (--lr) or amp=False on CUDA, start a new run (another "
                        "--output or --variant, or --overwrite, which moves this folder aside); also check "
                        "the input images for NaNs.", epoch, b, last_good)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = x.shape[0]
                seen += n
                for t in TERMS:
                    sums[t] += values[t]
                batches.set_postfix({t: f"{values[t] / n:.4f}" for t in TERMS}, refresh=False)
                if milestones.due(step):
                    t_eval = time.time()
                    convergence.append(milestones.evaluate(model, loss_fn, step, epoch,
                                                           _train_seconds(history) + t_eval - t0 - eval_seconds))
                    eval_seconds += time.time() - t_eval
                    runs.write_csv(run_dir / "convergence.csv", _frame(convergence, CONVERGENCE_COLUMNS))
            row = {"epoch": epoch, "step": min(epoch * steps_per_epoch, total_steps), **{t: sums[t] / max(seen, 1) for t in TERMS}, "seconds": round(time.time() - t0 - eval_seconds, 3)}
            history.append(row)
            batches.close()
            bar.set_postfix({t: f"{row[t]:.4f}" for t in TERMS}, refresh=False)
            if epoch % rcfg.checkpoint_every == 0 or epoch == end_epoch:
                if not _params_finite(model):
                    raise NonFiniteLossError(
                        f"non-finite model weights in {run_dir} after epoch {epoch}; not checkpointed. Last good "
                        f"checkpoint: {last_good}. Try a lower learning rate (--lr) in a new run (another --output "
                        f"or --variant, or --overwrite).", epoch, 0, last_good)
                last_good = runs.save_checkpoint(ckpt_dir, checkpoint_state(epoch), keep=rcfg.keep_checkpoints)
                last_good_epoch = epoch
            runs.write_csv(run_dir / "history.csv", _history_frame(history))
        bar.close()
        runs.write_csv(run_dir / "history.csv", _history_frame(history))
        if end_epoch < epochs:
            _end_session(run_dir, session, t_session, f"stopped after epoch {end_epoch} (stop_after)", len(history))
            return run_dir
        final = {"epoch": epochs, "step": total_steps, "model": model.state_dict(), "model_config": model.config,
                 "loss": loss_fn.state_dict(), "config_hash": chash, "history": history,
                 "convergence": convergence}
        runs.atomic_torch_save(final, final_path)
        t_eval = time.time()
        metrics = evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=device, progress=progress,
                               loaded=(model, loss_fn), splits=(task, train_ds, test_ds))
        if rcfg.eval_steps:  # the curve ends at the final model: the numbers of metrics.json
            convergence.append(Milestones.final_row(metrics, total_steps, epochs, _train_seconds(history)))
            runs.write_csv(run_dir / "convergence.csv", _frame(convergence, CONVERGENCE_COLUMNS))
    except BaseException as exc:
        bar.close()
        _end_session(run_dir, session, t_session, f"stopped: {type(exc).__name__}", len(history))
        raise
    session["eval_seconds"] = round(time.time() - t_eval, 3)
    _end_session(run_dir, session, t_session, "finished", len(history), auc=metrics.get("auc"),
                 train_seconds=round(_train_seconds(history), 3), steps=total_steps)
    return run_dir


def _end_session(run_dir: Path, session: dict[str, Any], t_session: float, status: str, epochs_done: int,
                 **facts: Any) -> None:
    session.update(ended=runs.now_iso(), wall_seconds=round(time.time() - t_session, 3), status=status,
                   epochs_done=epochs_done)
    runs.update_provenance(run_dir, session, **facts)


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """history.csv of a run as a DataFrame."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the run has not completed an epoch)")
    return pd.read_csv(path)

