"""K one-class PIADE models trained in one process as one batched model: an experiment for the GPU
(``bench_packing.py --stack K``), not used by runs.

At 32x32 a training step launches hundreds of small kernels, and the GPU waits on their latency, not on
arithmetic (benchmarks/README.md). Stacking K models makes each kernel do K times the work at the same
count of kernels, and keeps each model's own batch (the paper's 120):

* ``torch.func.stack_module_state`` stacks the K models' weights and BatchNorm buffers along a new first
  dimension, and ``vmap`` runs ``functional_call`` of one model over it. Each convolution of the K models
  becomes one grouped convolution, and each BatchNorm updates the K models' running statistics.
* The loss is per image, so the K batches go through it as one batch of K * B images. The training loss is
  the sum over the models of each model's batch mean: its gradient for model k's weights is model k's own.
* Adam is elementwise, so one fused Adam over the stacked weights is K independent Adams (same step count,
  learning rate and weight decay).

Under ``vmap`` the SE blocks' adaptive average pooling runs as a loop over the K models (torch 2.14 has no
batching rule for ``aten::as_strided_`` and warns of "a performance drop"): K small kernels there instead
of one.

In float64 a stacked step gives every model the step it takes alone, to rounding
(``tests/test_benchmarks.py``). In float32 the sums run in another order, as they do between two memory
layouts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from piade_lib.engine import precision as prec
from piade_lib.engine.compile_modes import compile_mode
from piade_lib.engine.trainer import compile_forward_loss


class StackedStep:
    """One optimiser step of ``len(models)`` models of one architecture on a ``(K, B, 3, S, S)`` stack of
    batches, model k on batch k: forward pass under the step's autocast, the loss in float32, fused Adam."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        loss_fn: nn.Module,
        *,
        lr: float,
        weight_decay: float,
        device: torch.device | str,
        precision: str = "auto",
        compile: bool | str = False,
    ) -> None:
        if len(models) < 1:
            raise ValueError("StackedStep needs at least one model")
        self.device = torch.device(device)
        self.precision = prec.resolve(self.device, precision)
        for m in models:
            prec.prepare_model(m.to(self.device).train(), self.device, self.precision)
        self.loss_fn = prec.prepare_loss(loss_fn.to(self.device), self.device, self.precision)
        self.params, self.buffers = stack_module_state(list(models))  # new leaves, (K, ...) each
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only: no memory
        self.optimizer = prec.optimizer(self.params.values(), lr, weight_decay, self.device)
        self.compile_mode = compile_mode(compile) if self.device.type == "cuda" else None
        self.forward_loss = self._forward_loss
        if self.compile_mode:
            self.forward_loss = compile_forward_loss(self._forward_loss, self.compile_mode)

    @property
    def n_models(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def _reconstruct(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,)).reconstruction

    def _forward_loss(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed training loss of the K models and each model's batch mean (detached), on the device."""
        k, b = xs.shape[:2]
        with self.precision.autocast():
            recon = vmap(self._reconstruct)(self.params, self.buffers, xs)
        terms = self.loss_fn.per_image(recon.to(xs.dtype).flatten(0, 1), xs.flatten(0, 1), check_range=False)
        per_model = terms["total"].view(k, b).mean(dim=1)
        return per_model.sum(), per_model.detach()

    def step(self, xs: torch.Tensor) -> torch.Tensor:
        """One step of every model; each model's batch-mean loss, on the device (nothing read)."""
        if xs.shape[0] != self.n_models:
            raise ValueError(f"StackedStep of {self.n_models} models got a stack of {xs.shape[0]} batches")
        if self.compile_mode:
            torch.compiler.cudagraph_mark_step_begin()
        loss, per_model = self.forward_loss(xs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return per_model

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights and buffers, as its own ``state_dict`` would hold them."""
        return {name: t[k].detach() for name, t in {**self.params, **self.buffers}.items()}
