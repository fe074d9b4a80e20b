"""One interface for every model a run can hold: fit on the train split, score a split, describe itself.

:class:`PiadeDetector` trains PIADE with :class:`~piade_lib.engine.trainer.Trainer` (checkpointed,
resumable, milestones) and scores with the training loss; :class:`BaselineDetector` wraps the
baselines of :mod:`piade_lib.engine.baselines` (OC-SVM, KDE, autoencoders). The run lifecycle
(:mod:`piade_lib.engine.lifecycle`) drives both the same way: it never asks which kind it holds.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from piade_lib.engine import checkpoints, files
from piade_lib.engine.config import BaselineSpec, PiadeSpec, RunSpec
from piade_lib.engine.scoring import mean_image, score_dataset
from piade_lib.engine.splits import Splits
from piade_lib.engine.trainer import NonFiniteLossError, Trainer, budget, stack_images
from piade_lib.metrics import RECON_KEYS, pixel_auroc, reconstruction_summary
from piade_lib.model.losses import TERMS

CONVERGENCE_COLUMNS = (
    "step",
    "epoch",
    "auc",
    "mse_auc",
    "normal_recon_mse",
    "normal_mean_image_mse",
    "recon_to_mean_image",
    "train_seconds",
)


@dataclass
class Scored:
    """What scoring a run's splits gives: the test scores (``id, label, total`` and per-term columns),
    the train scores, the metric terms to report, and metrics only this kind of model has."""

    test: pd.DataFrame
    train: pd.DataFrame
    terms: tuple[str, ...]
    pixel_auroc: float | None = None
    extra: dict[str, Any] | None = None


class Detector(ABC):
    """Fit on the normal train images of a run's splits, score splits, describe the fitted model."""

    #: files whose presence (with metrics.json) means the model was fitted and saved
    fitted_files: tuple[str, ...] = ()

    @abstractmethod
    def fit(self, splits: Splits, run_dir: Path, *, progress: bool, stop_after: int | None) -> dict[str, Any] | None:
        """Fit (or resume fitting) and save the model in ``run_dir``. Returns facts for the
        provenance session, or None when it stopped early (``stop_after``) and must be resumed."""

    @abstractmethod
    def load_fitted(self, run_dir: Path) -> None:
        """Load the saved fitted model of ``run_dir`` (to score without fitting again)."""

    @abstractmethod
    def score(self, splits: Splits, *, progress: bool) -> Scored:
        """Score the test and the train split."""

    def describe(self) -> dict[str, Any]:
        return {}

    def session_fields(self) -> dict[str, Any]:
        """Fields of the provenance session this detector fills (e.g. the epoch it resumed from)."""
        return {}

    def after_evaluation(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Anything written from the final metrics (PIADE: the last row of convergence.csv); nothing by default."""
        return None


def make_detector(spec: RunSpec, device: torch.device, config_hash: str, *, fresh: bool = True) -> Detector:
    """The detector of a run spec. Builds the model now, so that missing pretrained weights fail
    before anything is written. ``fresh=False``: the weights will come from the run's checkpoint,
    so no pretrained weights are fetched."""
    if isinstance(spec, BaselineSpec):
        return BaselineDetector(spec, device)
    return PiadeDetector(spec, device, config_hash, fresh=fresh)


# ----------------------------------------------------------------------------------------------
# PIADE
# ----------------------------------------------------------------------------------------------
class Milestones:
    """Scores the model on the test split at the optimiser steps of ``eval_steps`` (below the
    budget; the final model is scored by the run's evaluation): AUROC of the anomaly score and of
    the MSE term alone, and the normal test images' reconstruction error beside the error of the
    train-mean image. Nothing random is drawn, so a run with milestones trains exactly as one
    without."""

    def __init__(
        self, eval_steps: tuple[int, ...], total_steps: int, splits: Splits, device: torch.device, batch_size: int
    ) -> None:
        self.steps = {int(s) for s in eval_steps if int(s) < total_steps}
        self.splits, self.device = splits, device
        self.batch_size = max(int(batch_size), 64)
        self._mean: torch.Tensor | None = None

    def evaluate(
        self, model: torch.nn.Module, loss_fn: torch.nn.Module, step: int, epoch: int, train_seconds: float
    ) -> dict[str, Any]:
        if self._mean is None:
            self._mean = mean_image(self.splits.train)
        scores = score_dataset(model, loss_fn, self.splits.test, self.batch_size, self.device, reference=self._mean)
        summary = reconstruction_summary(scores)  # type: ignore[arg-type]
        return {"step": step, "epoch": epoch, **summary, "train_seconds": round(train_seconds, 3)}

    @staticmethod
    def final_row(metrics: dict[str, Any], step: int, epoch: int, train_seconds: float) -> dict[str, Any]:
        return {
            "step": step,
            "epoch": epoch,
            "auc": metrics.get("auc"),
            "mse_auc": (metrics.get("term_auc") or {}).get("mse"),
            **{k: metrics.get(k) for k in RECON_KEYS},
            "train_seconds": round(train_seconds, 3),
        }


class CheckpointPolicy:
    """When to write a resume checkpoint: every ``every`` epochs when set, else when ``minutes`` have
    passed since the last one; always after the last epoch of this session. An interrupted run
    loses at most that interval."""

    def __init__(self, every: int | None, minutes: float) -> None:
        self.every, self.seconds = every, float(minutes) * 60.0
        self.last = time.monotonic()

    def due(self, epoch: int, end_epoch: int) -> bool:
        if epoch == end_epoch:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        return time.monotonic() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.monotonic()


class PiadeDetector(Detector):
    fitted_files = ("checkpoints/" + checkpoints.FINAL,)

    def __init__(self, spec: PiadeSpec, device: torch.device, config_hash: str, *, fresh: bool = True) -> None:
        from piade_lib.model.losses import PiadeLoss
        from piade_lib.model.network import build_model

        self.spec, self.device, self.config_hash = spec, device, config_hash
        preset = spec.preset_obj()
        pretrained = spec.pretrained and fresh  # resumed or trained: every weight comes from the run folder
        self.model = build_model(
            preset, image_size=spec.image_size, n_vectors=spec.n_vectors, pretrained=pretrained
        ).to(device)
        self.loss_fn = PiadeLoss(preset=preset, pretrained=pretrained).to(device)
        self.history: list[dict[str, Any]] = []
        self.convergence: list[dict[str, Any]] = []
        self.resumed_from_epoch = 0
        self.epochs, self.total_steps = 0, 0

    def session_fields(self) -> dict[str, Any]:
        return {"resumed_from_epoch": self.resumed_from_epoch, "epochs_done": len(self.history)}

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, splits: Splits, run_dir: Path, *, progress: bool, stop_after: int | None) -> dict[str, Any] | None:
        spec = self.spec
        ckpt_dir = run_dir / "checkpoints"
        trainer = Trainer(
            self.model,
            self.loss_fn,
            stack_images(splits.train, self.device),
            lr=spec.lr,
            weight_decay=spec.weight_decay,
            batch_size=spec.batch_size,
            seed=spec.seed,
            amp=spec.amp,
            compile=spec.compile,
            precision=spec.precision,
        )
        last_good = self._resume(trainer, ckpt_dir, progress)
        self.epochs, self.total_steps = budget(spec.epochs, spec.steps, trainer.steps_per_epoch)
        milestones = Milestones(spec.eval_steps, self.total_steps, splits, self.device, spec.batch_size)
        end_epoch = self.epochs if stop_after is None else min(self.epochs, int(stop_after))
        policy = CheckpointPolicy(spec.checkpoint_every, spec.checkpoint_minutes)

        def at_milestone(step: int, epoch: int, epoch_seconds: float) -> float:
            t0 = time.time()
            trainer.convergence.append(
                milestones.evaluate(self.model, self.loss_fn, step, epoch, trainer.train_seconds + epoch_seconds)
            )
            files.write_csv(run_dir / "convergence.csv", pd.DataFrame(trainer.convergence, columns=CONVERGENCE_COLUMNS))
            return time.time() - t0

        bar = tqdm(
            range(trainer.epochs_done + 1, end_epoch + 1),
            desc=f"{spec.dataset}/{spec.normal_class} {spec.variant}",
            initial=trainer.epochs_done,
            total=self.epochs,
            disable=not progress,
            unit="epoch",
        )
        for epoch in bar:
            try:
                result = trainer.train_epoch(
                    last_step=self.total_steps,
                    milestones=milestones.steps,
                    on_milestone=at_milestone,
                    progress=progress,
                )
            except NonFiniteLossError as exc:
                raise self._nan_error(run_dir, exc.epoch, exc.batch, last_good, str(exc)) from None
            bar.set_postfix({k: f"{v:.4f}" for k, v in result.means.items()}, refresh=False)
            self.history = trainer.history
            if policy.due(epoch, end_epoch):
                if not trainer.weights_are_finite():
                    raise self._nan_error(run_dir, epoch, 0, last_good, f"non-finite model weights after epoch {epoch}")
                last_good = checkpoints.save_checkpoint(
                    ckpt_dir, {**trainer.state_dict(), "config_hash": self.config_hash}, keep=spec.keep_checkpoints
                )
                # history.csv with the checkpoint (it holds the epochs the checkpoint holds), not every epoch:
                # a COIL-100 epoch is one batch, ~26 ms on an H100; an fsynced write costs ~1.4 ms on a local
                # disk (benchmarks/bench_history_write.py), more on a shared filesystem
                files.write_csv(run_dir / "history.csv", pd.DataFrame(trainer.history))
                policy.saved()
        bar.close()
        self.history, self.convergence = trainer.history, trainer.convergence
        if end_epoch < self.epochs:
            return None
        files.atomic_torch_save(
            {
                "epoch": self.epochs,
                "step": self.total_steps,
                "model": self.model.state_dict(),
                "model_config": self.model.config,
                "loss": self.loss_fn.state_dict(),
                "config_hash": self.config_hash,
                "history": trainer.history,
                "convergence": trainer.convergence,
            },
            ckpt_dir / checkpoints.FINAL,
        )
        return {"train_seconds": round(trainer.train_seconds, 3), "steps": self.total_steps}

    def _resume(self, trainer: Trainer, ckpt_dir: Path, progress: bool) -> Path | None:
        resume = checkpoints.load_latest_checkpoint(ckpt_dir, config_hash_=self.config_hash)
        if resume is None:
            return None
        state, path = resume
        trainer.load_state_dict(state)
        self.resumed_from_epoch = trainer.epochs_done
        self.history = trainer.history
        if progress:
            tqdm.write(f"[piade] resuming {ckpt_dir.parent} from {path.name} (epoch {trainer.epochs_done})")
        return path

    @staticmethod
    def _nan_error(run_dir: Path, epoch: int, batch: int, last_good: Path | None, what: str) -> NonFiniteLossError:
        good = (
            f"the last good checkpoint is {last_good}, left intact; re-running resumes from it"
            if last_good is not None
            else "no checkpoint was written yet, so a re-run starts afresh"
        )
        return NonFiniteLossError(
            f"{what} in {run_dir}; {good}. Nothing was overwritten. To change settings, e.g. a lower learning "
            "rate (--lr) or amp=False on CUDA, start a new run (another --output or --variant, or --overwrite, "
            "which moves this folder aside); also check the input images for NaNs.",
            epoch,
            batch,
            last_good,
        )

    # ---- scoring ---------------------------------------------------------------------------------
    def load_fitted(self, run_dir: Path) -> None:
        from piade_lib.engine.scoring import load_final

        final = load_final(run_dir, self.config_hash)
        self.model.load_state_dict(final["model"])
        if final.get("loss"):
            self.loss_fn.load_state_dict(final["loss"])
        self.history = [dict(h) for h in final.get("history", [])]
        self.convergence = [dict(c) for c in final.get("convergence", [])]
        self.epochs, self.total_steps = int(final["epoch"]), int(final.get("step") or 0)

    def score(self, splits: Splits, *, progress: bool) -> Scored:
        bs = self.spec.batch_size
        out = score_dataset(
            self.model,
            self.loss_fn,
            splits.test,
            bs,
            self.device,
            progress=progress,
            with_maps=splits.has_masks,
            desc="test",
            reference=mean_image(splits.train),
        )
        pix = None
        if splits.has_masks:
            scores, maps, masks = out  # type: ignore[misc]
            pix = pixel_auroc(maps, masks, seed=self.spec.seed)
        else:
            scores = out  # type: ignore[assignment]
        train = score_dataset(self.model, self.loss_fn, splits.train, bs, self.device, progress=progress, desc="train")
        recon = reconstruction_summary(scores)  # type: ignore[arg-type]
        extra: dict[str, Any] = {k: recon[k] for k in RECON_KEYS}
        if splits.has_masks and pix is None:
            extra["pixel_note"] = "masks hold a single class (no anomalous pixels in the test set)"
        return Scored(scores, train, TERMS, pix, extra)  # type: ignore[arg-type]

    def after_evaluation(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """The convergence curve ends at the final model: the numbers of metrics.json."""
        if self.spec.eval_steps:
            train_seconds = float(sum(float(h["seconds"]) for h in self.history))
            self.convergence.append(Milestones.final_row(metrics, self.total_steps, self.epochs, train_seconds))
            files.write_csv(run_dir / "convergence.csv", pd.DataFrame(self.convergence, columns=CONVERGENCE_COLUMNS))


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------
class BaselineDetector(Detector):
    fitted_files = ("scores.csv",)

    def __init__(self, spec: BaselineSpec, device: torch.device) -> None:
        from piade_lib.engine.baselines import make_baseline

        self.spec, self.device = spec, device
        params = dict(spec.params)
        epochs = int(params.pop("epochs", 100))
        self.model = make_baseline(spec.baseline, seed=spec.seed, epochs=epochs, device=str(device), **params)
        self.fit_seconds: float | None = None

    def fit(self, splits: Splits, run_dir: Path, *, progress: bool, stop_after: int | None) -> dict[str, Any] | None:
        from piade_lib.engine.baselines import CAEBaseline, dataset_arrays

        self.model.progress = progress  # type: ignore[attr-defined]
        train_x, _, _ = dataset_arrays(splits.train)
        t0 = time.time()
        self.model.fit(train_x)
        self.fit_seconds = round(time.time() - t0, 3)
        if isinstance(self.model, CAEBaseline) and self.model.model is not None:
            files.atomic_torch_save(
                {
                    "model": self.model.model.state_dict(),
                    "image_size": int(train_x.shape[-1]),
                    "latent_dim": self.model.latent_dim,
                    "history": self.model.history,
                },
                run_dir / "checkpoints" / checkpoints.FINAL,
            )
            files.write_csv(run_dir / "history.csv", pd.DataFrame(self.model.history))
        return {"fit_seconds": self.fit_seconds}

    def load_fitted(self, run_dir: Path) -> None:
        raise NotImplementedError("baseline models are not kept; their scores are (scores.csv)")

    def score(self, splits: Splits, *, progress: bool) -> Scored:
        from piade_lib.engine.baselines import dataset_arrays

        test_x, test_y, test_ids = dataset_arrays(splits.test)
        train_x, _, train_ids = dataset_arrays(splits.train)
        test = pd.DataFrame({"id": test_ids, "label": test_y.astype(int), "total": self.model.score(test_x)})
        train = pd.DataFrame({"id": train_ids, "label": 0, "total": self.model.score(train_x)})
        return Scored(test, train, ("total",), None, {"fitted": self.model.describe(), "fit_seconds": self.fit_seconds})
