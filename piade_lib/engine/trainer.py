"""Training only: the optimiser step, the epoch, the state to checkpoint, the finite-loss check.

:class:`Trainer` knows nothing of run folders, datasets or evaluation; the run lifecycle
(:mod:`piade_lib.engine.lifecycle`) decides when to checkpoint and what to write.

Optimisation (Table 1 of the paper; ``authors_code`` preset: the released code): Adam with L2
weight decay (``torch.optim.Adam(weight_decay=...)``), lr 1e-3, weight decay 1e-4 (code 1e-3),
batch 120 (code 60), 400 epochs; shuffled batches, no augmentation. On CUDA the forward pass runs
under ``torch.autocast`` (bf16 where supported, else fp16 with a GradScaler) with channels_last;
the loss is always computed in float32. On the CPU everything is float32 unless ``precision="bf16"``
(:mod:`piade_lib.engine.precision`). Convolutions run in channels_last and Adam is torch's fused
implementation where the device has it (float32 rounding differences only).

The train split is held as one float32 tensor on the training device and batched there (no
per-sample Python on the hot path); each epoch's order is drawn from the run's generator exactly
as ``DataLoader(shuffle=True, generator=...)`` draws it, so runs keep the batches they had when
they were trained through a DataLoader. The loss terms are summed on the device and read once per
epoch; a non-finite batch is remembered on the device (its index) and reported at the end of the
epoch, before anything is checkpointed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from piade_lib.engine import checkpoints, cpu_allocator
from piade_lib.engine import precision as prec
from piade_lib.engine.compile_modes import compile_mode
from piade_lib.model.losses import TERMS

HISTORY_COLUMNS = ("epoch", "step", "mse", "perceptual", "ssim_loss", "total", "seconds")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is left intact."""

    def __init__(self, message: str, epoch: int, batch: int, last_checkpoint: Any = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.last_checkpoint = last_checkpoint


def amp_settings(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) of the "auto" precision (float32 when not ``enabled``)."""
    return prec.amp_settings(device, "auto" if enabled else "fp32")


def budget(epochs: int | None, steps: int | None, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, optimiser steps) of a run whose epoch has ``steps_per_epoch`` batches: a step budget
    runs ceil(steps / steps_per_epoch) epochs, the last one cut at the budget."""
    if steps_per_epoch < 1:
        raise ValueError("the training split yields no batch")
    if steps is not None:
        return -(-int(steps) // steps_per_epoch), int(steps)
    if epochs is None:
        raise ValueError("a run needs an epoch or a step budget")
    return int(epochs), int(epochs) * steps_per_epoch


@torch.no_grad()
def stack_images(dataset: Dataset, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Every image of ``dataset`` as one ``(N, 3, S, S)`` float32 tensor on ``device``, in dataset order."""
    parts = [
        batch["image"].to(device, torch.float32)
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    ]
    if not parts:
        raise ValueError("the training split is empty")
    return torch.cat(parts)


def drop_last(n: int, batch_size: int) -> bool:
    """A last batch of one image cannot train BatchNorm: it is dropped."""
    return n > batch_size and n % batch_size == 1


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size if drop_last(n, batch_size) else -(-n // batch_size)


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """This epoch's order of the ``n`` training images, drawn as a shuffling DataLoader draws it (one
    base seed for its workers, the permutation, and the sampler's trailing empty draw), so the RNG
    stream, and with it every batch, is the same as with ``DataLoader(shuffle=True)``."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator)
    torch.randperm(n, generator=generator)
    return order


@dataclass
class EpochResult:
    epoch: int
    step: int  # optimiser steps done after this epoch
    means: dict[str, float]  # per-image means of the loss terms
    seconds: float

    def row(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, **self.means, "seconds": round(self.seconds, 3)}


def compile_forward_loss(fn: Callable[..., Any], mode: str, **options: Any) -> Callable[..., Any]:
    """``torch.compile`` of the step's forward pass and loss in ``mode`` (a mode of
    :mod:`~piade_lib.engine.compile_modes`), with static shapes. An epoch's last batch is often smaller
    (CIFAR-10: 41 batches of 120, then 80). With torch's automatic dynamic shapes that second size would
    recompile the function for *any* batch size and the full batches would run the general graph from then
    on. With ``dynamic=False`` each size keeps its own specialised graph (two per run), and under
    "reduce-overhead" its own CUDA graph. ``options`` go to ``torch.compile`` (the tests pass a backend)."""
    return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False, **options)


class Trainer:
    """Adam on ``loss_fn.per_image(model(x), x)["total"].mean()`` over the images of ``images``."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: torch.nn.Module,
        images: torch.Tensor,
        *,
        lr: float,
        weight_decay: float,
        batch_size: int,
        seed: int,
        amp: bool = True,
        compile: bool | str = False,
        precision: str = "auto",
    ) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.device = images.device
        cpu_allocator.tune(self.device)  # on the CPU, large blocks stay in the heap between steps
        self.batch_size = int(batch_size)
        # the step's numeric settings (engine/precision.py): "auto" = bf16/fp16 autocast on CUDA, float32 on
        # the CPU; channels_last convolutions; fused Adam where the device has it. amp=False: float32 everywhere.
        self.precision = prec.resolve(self.device, precision if amp else "fp32")
        prec.prepare_model(model, self.device, self.precision)
        prec.prepare_loss(loss_fn, self.device, self.precision)
        self.images = prec.prepare_batch(images, self.device, self.precision)
        # the train split's [0, 1] check, once: the step then never reads the device (no GPU sync per batch)
        loss_fn.check_range(self.images)
        self.memory_format = prec.memory_format(self.device, self.precision)
        # compile: True for torch.compile's default mode, or a mode such as "reduce-overhead" (CUDA graphs). The
        # forward pass and the loss compile as one graph (they trace without a break), so its backward is one
        # compiled graph too. CUDA only: on a CPU it compiles for about a minute to gain about 1 % (benchmarks/README).
        self.compile_mode = compile_mode(compile) if self.device.type == "cuda" else None
        self.forward_loss = self._forward_loss
        if self.compile_mode:
            self.forward_loss = compile_forward_loss(self._forward_loss, self.compile_mode)
        self.lr = float(lr)
        self.optimizer = prec.optimizer(model.parameters(), lr, weight_decay, self.device)
        self.scaler = prec.grad_scaler(self.device, self.precision)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epochs_done = 0
        self.history: list[dict[str, Any]] = []
        self.convergence: list[dict[str, Any]] = []

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_images, self.batch_size)

    @property
    def train_seconds(self) -> float:
        return float(sum(float(h["seconds"]) for h in self.history))

    def _forward_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's training loss (the mean total) and its per-term sums (detached), both on the device:
        the forward pass under the step's autocast, the loss in float32. The train split's range was
        checked once by the constructor, so nothing here reads the device (and it traces as one graph)."""
        with self.precision.autocast():
            recon = self.model(x).reconstruction
        terms = self.loss_fn.per_image(recon.float(), x, check_range=False)
        return terms["total"].mean(), torch.stack([terms[t].detach().float().sum() for t in TERMS])

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the batch ``x`` of the train split; the batch's per-term loss sums, on the
        device. Nothing in it reads the device: a GPU step never waits for the host."""
        if self.compile_mode:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: the previous step's outputs are dead
        loss, term_sums = self.forward_loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return term_sums

    def train_epoch(
        self,
        *,
        last_step: int,
        milestones: set[int] | frozenset[int] = frozenset(),
        on_milestone: Callable[[int, int, float], float] | None = None,
        progress: bool = False,
    ) -> EpochResult:
        """One epoch (cut at optimiser step ``last_step``). After each step of ``milestones``,
        ``on_milestone(step, epoch, training seconds of this epoch so far)`` runs and returns the seconds
        it spent (milestone scoring: not counted as training time). Raises :class:`NonFiniteLossError`
        (without checkpoint context) when a batch's loss was not finite."""
        epoch = self.epochs_done + 1
        first_step = self.epochs_done * self.steps_per_epoch + 1
        self.model.train()
        t0 = time.time()
        order = epoch_order(self.n_images, self.generator)  # drawn on the CPU, as a DataLoader draws it
        if self.device.type == "cuda":  # copied from pinned memory without a host wait (a pageable copy syncs)
            order = order.pin_memory().to(self.device, non_blocking=True)
        else:
            order = order.to(self.device)
        n_batches = self.steps_per_epoch
        sums = torch.zeros(len(TERMS), device=self.device, dtype=torch.float64)
        first_bad = torch.full((), -1, device=self.device, dtype=torch.int64)
        seen, step, excluded = 0, first_step - 1, 0.0
        for b in tqdm(range(1, n_batches + 1), desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch"):
            if first_step + b - 1 > last_step:  # a step budget ends inside the last epoch
                break
            step = first_step + b - 1
            idx = order[(b - 1) * self.batch_size : b * self.batch_size]
            try:
                batch_sums = self.step(self.images.index_select(0, idx).contiguous(memory_format=self.memory_format))
            except RuntimeError as exc:  # e.g. Adam's step size overflowing float32 for an absurd lr
                if "overflow" not in str(exc):
                    raise
                raise NonFiniteLossError(
                    f"the optimiser step overflowed at epoch {epoch}, batch {b} ({exc}; learning rate {self.lr:g})",
                    epoch,
                    b,
                ) from None
            first_bad = torch.where(
                (first_bad < 0) & ~torch.isfinite(batch_sums).all(), torch.full_like(first_bad, b), first_bad
            )
            sums += batch_sums.double()
            seen += int(idx.numel())
            if step in milestones and on_milestone is not None:
                if int(first_bad) >= 0:  # never score a model whose weights a NaN step has spoilt
                    break
                excluded += on_milestone(step, epoch, time.time() - t0 - excluded)
        *term_sums, bad = torch.cat([sums, first_bad.double().view(1)]).tolist()  # the epoch's one device read
        bad = int(bad)
        values = dict(zip(TERMS, term_sums, strict=True))
        if bad >= 0:
            raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}, batch {bad}", epoch, bad)
        if not all(math.isfinite(v) for v in values.values()):
            raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}", epoch, 0)
        self.epochs_done = epoch
        result = EpochResult(epoch, step, {t: values[t] / max(seen, 1) for t in TERMS}, time.time() - t0 - excluded)
        self.history.append(result.row())
        return result

    def weights_are_finite(self) -> bool:
        """Whether every weight is finite (checked before a checkpoint is written)."""
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    # ---- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epochs_done,
            "model": self.model.state_dict(),
            "model_config": self.model.config,
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": checkpoints.rng_state(self.generator),
            "history": list(self.history),
            "convergence": list(self.convergence),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if state.get("loss"):
            self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"], self.generator)
        self.epochs_done = int(state["epoch"])
        self.history = [dict(h) for h in state.get("history", [])]
        self.convergence = [dict(c) for c in state.get("convergence", [])]
