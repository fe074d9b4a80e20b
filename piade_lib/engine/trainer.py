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

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from piade_lib.engine import checkpoints, files, folders, provenance
from piade_lib.engine.config import RunConfig
from piade_lib.engine.scoring import evaluate_run, resolve_device
from piade_lib.engine.splits import _manifest, task_from_config
from piade_lib.metrics import TERMS

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
        from piade_lib.engine.scoring import mean_image, score_dataset
        from piade_lib.metrics import reconstruction_summary

        if self._mean is None:
            self._mean = mean_image(self.train_ds)
        scores = score_dataset(model, loss_fn, self.test_ds, self.batch_size, self.device,
                               reference=self._mean)
        summary = reconstruction_summary(scores)  # type: ignore[arg-type]
        return {"step": step, "epoch": epoch, **summary, "train_seconds": round(train_seconds, 3)}

    @staticmethod
    def final_row(metrics: dict[str, Any], step: int, epoch: int, train_seconds: float) -> dict[str, Any]:
        from piade_lib.metrics import RECON_KEYS

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
    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import build_model, model_from_config

    rcfg = cfg.resolved()
    config = rcfg.to_dict()
    chash = folders.config_hash(config)
    run_dir = rcfg.run_dir(results_root)
    exists = folders.check_run_dir(run_dir, config, overwrite=overwrite)  # raises on another config
    ckpt_dir = run_dir / "checkpoints"
    final_path = ckpt_dir / checkpoints.FINAL

    if exists and folders.is_finished(run_dir):
        metrics = files.read_json(run_dir / "metrics.json")
        if metrics.get("auc") is not None and int(metrics.get("n_bootstrap", -1)) != int(rcfg.n_bootstrap):
            evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=rcfg.device, progress=progress)
        return run_dir
    device = resolve_device(rcfg.device)
    if exists and final_path.is_file():  # trained, not (fully) evaluated
        evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=device, progress=progress)
        return run_dir
    session: dict[str, Any] = provenance.new_session(device=str(device), device_name=provenance.device_name(device),
                                               status="running")
    t_session = time.time()

    # ---- data, model, loss: built before anything is written, so that a missing dataset or missing
    # ImageNet weights leave no run folder behind ------------------------------------------------
    checkpoints.seed_everything(rcfg.seed)
    task, train_ds, test_ds = task_from_config(config)
    manifest = _manifest(task, train_ds, test_ds)
    man_path = run_dir / "manifest.json"
    if exists and man_path.is_file():
        old = files.read_json(man_path)
        if old.get("checksum") != manifest.get("checksum") or old.get("subset") != manifest.get("subset"):
            raise folders.RunConfigMismatchError(
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

    resume = checkpoints.load_latest_checkpoint(ckpt_dir, config_hash_=chash) if exists else None
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
    folders.prepare_run_dir(run_dir, config)
    if not man_path.is_file():
        files.write_json(man_path, manifest)
    provenance.update_provenance(run_dir, session, **provenance.provenance(rcfg.seed, device, rcfg.pretrained))

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
        checkpoints.set_rng_state(state["rng"], generator)
        history = [dict(h) for h in state.get("history", [])]
        convergence = [dict(c) for c in state.get("convergence", [])]
        start_epoch = int(state["epoch"])
        if progress:
            tqdm.write(f"[piade] resuming {run_dir} from {last_good.name} (epoch {start_epoch})")
    session["resumed_from_epoch"] = start_epoch

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "model": model.state_dict(), "model_config": model.config,
                "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_scaler else {}, "rng": checkpoints.rng_state(generator),
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
                    files.write_csv(run_dir / "convergence.csv", _frame(convergence, CONVERGENCE_COLUMNS))
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
                last_good = checkpoints.save_checkpoint(ckpt_dir, checkpoint_state(epoch), keep=rcfg.keep_checkpoints)
                last_good_epoch = epoch
            files.write_csv(run_dir / "history.csv", _history_frame(history))
        bar.close()
        files.write_csv(run_dir / "history.csv", _history_frame(history))
        if end_epoch < epochs:
            _end_session(run_dir, session, t_session, f"stopped after epoch {end_epoch} (stop_after)", len(history))
            return run_dir
        final = {"epoch": epochs, "step": total_steps, "model": model.state_dict(), "model_config": model.config,
                 "loss": loss_fn.state_dict(), "config_hash": chash, "history": history,
                 "convergence": convergence}
        files.atomic_torch_save(final, final_path)
        t_eval = time.time()
        metrics = evaluate_run(run_dir, n_bootstrap=rcfg.n_bootstrap, device=device, progress=progress,
                               loaded=(model, loss_fn), splits=(task, train_ds, test_ds))
        if rcfg.eval_steps:  # the curve ends at the final model: the numbers of metrics.json
            convergence.append(Milestones.final_row(metrics, total_steps, epochs, _train_seconds(history)))
            files.write_csv(run_dir / "convergence.csv", _frame(convergence, CONVERGENCE_COLUMNS))
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
    session.update(ended=provenance.now_iso(), wall_seconds=round(time.time() - t_session, 3), status=status,
                   epochs_done=epochs_done)
    provenance.update_provenance(run_dir, session, **facts)


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """history.csv of a run as a DataFrame."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the run has not completed an epoch)")
    return pd.read_csv(path)
