"""BatchNorm recalibration of a trained run: do its evaluation statistics fail, or its weights?

A BatchNorm layer evaluates with running statistics, updated in training as
``running = (1 - m) * running + m * batch`` (PyTorch's momentum ``m``). The authors' code's pyramid
BatchNorm has ``m = 0.95`` (``pyramid_bn_momentum``, kept literally by the ``authors_code`` preset,
docs/reproduction-notes.md), so its running statistics are ~ those of the last training batch: at
batch 8, of 8 images. :func:`recalibration_summary` scores a finished run's test split with its final
weights twice: as trained, and with every BatchNorm layer's running statistics re-estimated as the
plain average over the run's whole train split (:func:`torch.optim.swa_utils.update_bn`). The
weights are the same; only the statistics differ. Nothing is written to the run folder.

``only`` (a part of the network: ``encoder``, ``pyramid``, ``upsampling``, ``decoder``) re-estimates
that part's BatchNorm layers alone, every other layer evaluating with its statistics as trained, as
at test time. Measured this way, the authors_code preset's collapsed runs recover with the encoder's
statistics re-estimated and not with the pyramid's (docs/reproduction-notes.md §6.2).

``per_layer=True`` also says, layer by layer, how far the trained statistics were from the
re-estimated ones (:func:`batchnorm_drift`), beside the size of the feature map each layer sees and
so the number of values per channel its batch statistics had in training (batch x height x width).
Measured on the authors_readings profile, the deepest encoder stage drifts the most whether it sees
8 or 32 values per channel (docs/reproduction-notes.md §6.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset

from piade_lib.engine import cpu_threads, files, folders
from piade_lib.engine.config import PiadeSpec, spec_from_config
from piade_lib.engine.detectors import make_detector
from piade_lib.engine.scoring import mean_image, resolve_device, score_dataset
from piade_lib.engine.splits import load_splits
from piade_lib.metrics import reconstruction_summary

SUMMARY_KEYS = ("auc", "mse_auc", "normal_recon_mse", "recon_to_mean_image")
NETWORK_PARTS = ("encoder", "pyramid", "upsampling", "decoder")  # the parts of the PIADE network with BatchNorm


def named_batchnorm(model: torch.nn.Module, only: str | None = None) -> dict[str, torch.nn.Module]:
    """The BatchNorm layers of ``model`` by name, in network order; with ``only``, those of the submodule
    of that name (e.g. ``pyramid``)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and (only is None or name == only or name.startswith(f"{only}."))
    }


def batchnorm_layers(model: torch.nn.Module, only: str | None = None) -> list[torch.nn.Module]:
    """The BatchNorm layers of ``model``; with ``only``, those of the submodule of that name (e.g. ``pyramid``)."""
    return list(named_batchnorm(model, only).values())


@torch.no_grad()
def _update_some_bn(batches: Iterable[torch.Tensor], model: torch.nn.Module, layers: list[torch.nn.Module]) -> None:
    """``update_bn`` restricted to ``layers``: the others stay in eval mode with their own statistics."""
    was_training, momenta = model.training, [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average, as update_bn makes it
        m.train()
    for x in batches:
        model(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def _feature_map_size(x: torch.Tensor) -> tuple[int, int]:
    """Height and width of a BatchNorm input: (N, C, H, W) -> (H, W); (N, C, L) -> (L, 1); (N, C) -> (1, 1)."""
    size = tuple(int(v) for v in x.shape[2:]) + (1, 1)
    return size[0], size[1]


def batchnorm_drift(
    trained: dict[str, tuple[torch.Tensor, torch.Tensor]],
    model: torch.nn.Module,
    spatial: dict[str, tuple[int, int]],
    train_batch_size: int,
    eps: float = 1e-5,
) -> list[dict[str, Any]]:
    """Per BatchNorm layer of ``model`` named in ``trained`` (its running mean and variance as trained;
    the model's are the re-estimated ones): ``mean_shift``, the mean over channels of
    |mean as trained - re-estimated| in re-estimated standard deviations, and ``log_var_ratio``, the mean
    over channels of |ln(variance as trained / re-estimated)| (0: the statistics agree). ``spatial``: each
    layer's feature-map size, which with ``train_batch_size`` gives ``values_per_channel``, what one
    training batch's statistics averaged over per channel."""
    rows = []
    for i, (name, m) in enumerate(named_batchnorm(model).items()):
        if name not in trained:
            continue
        mean0, var0 = (t.double() for t in trained[name])
        mean1, var1 = m.running_mean.double(), m.running_var.double()  # type: ignore[union-attr]
        h, w = spatial.get(name, (0, 0))
        rows.append(
            {
                "layer": name,
                "index": i,
                "channels": int(mean1.numel()),
                "height": h,
                "width": w,
                "values_per_channel": int(train_batch_size) * h * w,
                "mean_shift": float(((mean0 - mean1).abs() / (var1 + eps).sqrt()).mean()),
                "log_var_ratio": float(torch.log((var0 + eps) / (var1 + eps)).abs().mean()),
            }
        )
    return rows


def recalibrate_batchnorm(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    only: str | None = None,
) -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` (with ``only``, of the
    submodule of that name alone) as the plain average over ``dataset`` (dict items with ``image``) in
    batches of ``batch_size``; a last batch smaller than the others is left out, so that every batch
    weighs the same. Returns the number of layers re-estimated."""
    layers = batchnorm_layers(model, only)
    if not layers:
        bn = torch.nn.modules.batchnorm._BatchNorm
        with_bn = sorted({n.split(".")[0] for n, m in model.named_modules() if isinstance(m, bn)})
        raise ValueError(f"no BatchNorm layer in submodule {only!r}; submodules with BatchNorm: {with_bn}")
    n = len(dataset)  # type: ignore[arg-type]
    if n < 2:
        raise ValueError(f"recalibrating BatchNorm needs at least 2 images, got {n}")
    loader = DataLoader(dataset, batch_size=min(int(batch_size), n), shuffle=False, drop_last=True)
    dev = torch.device(device)
    batches = (batch["image"].to(dev, torch.float32) for batch in loader)
    if only is None:
        update_bn(batches, model)
    else:
        _update_some_bn(batches, model, layers)
    return len(layers)


def recalibration_summary(
    run_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    only: str | None = None,
    per_layer: bool = False,
) -> dict[str, Any]:
    """Scores the finished PIADE run ``run_dir`` as trained and with recalibrated BatchNorm statistics
    (see the module docstring; ``only``: of that submodule alone); the test split is scored in the
    run's batch size and threads, as its metrics were, and the statistics are re-estimated in batches
    of ``batch_size``. Returns the run's class, preset, seed and variant, ``n_batchnorm`` (the layers
    re-estimated), ``metrics_auc`` (metrics.json's, which ``auc_as_trained`` must equal) and, for
    each of :data:`SUMMARY_KEYS`, ``<key>_as_trained`` and ``<key>_recalibrated``; with ``per_layer``,
    also ``layers``: :func:`batchnorm_drift`'s rows for the layers re-estimated."""
    run_dir = Path(run_dir)
    with folders.locked(run_dir):
        cfg = folders.load_config(run_dir)
        spec = spec_from_config(cfg)
        if not isinstance(spec, PiadeSpec):
            raise ValueError(f"{run_dir} is a {spec.kind} run: only PIADE runs have BatchNorm layers to recalibrate")
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.is_file():
            raise FileNotFoundError(f"{metrics_path} not found: the run has not finished (./run_all.sh PROFILE)")
        dev = resolve_device(device)
        splits = load_splits(cfg, validate=False)
        detector = make_detector(spec, dev, folders.config_hash(cfg), fresh=False)
        detector.load_fitted(run_dir)
        model, loss_fn = detector.model, detector.loss_fn  # type: ignore[attr-defined]
        with cpu_threads.pinned(spec.threads):
            reference = mean_image(splits.train)

            def summary() -> dict[str, Any]:
                scores = score_dataset(model, loss_fn, splits.test, spec.batch_size, dev, reference=reference)
                return reconstruction_summary(scores)  # type: ignore[arg-type]

            before = summary()
            named = named_batchnorm(model, only)
            trained = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in named.items()}  # type: ignore[union-attr]
            spatial: dict[str, tuple[int, int]] = {}

            def seen(name: str) -> Callable[..., None]:
                def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
                    spatial.setdefault(name, _feature_map_size(inputs[0]))  # returns None: the output stays

                return hook

            hooks = [m.register_forward_hook(seen(n)) for n, m in named.items()]
            try:
                n_bn = recalibrate_batchnorm(model, splits.train, batch_size=batch_size, device=dev, only=only)
            finally:
                for h in hooks:
                    h.remove()
            after = summary()
    layers = batchnorm_drift(trained, model, spatial, spec.batch_size) if per_layer else None
    return {
        "class": spec.normal_class,
        "preset": spec.preset,
        "seed": spec.seed,
        "variant": spec.variant,
        "n_batchnorm": n_bn,
        "metrics_auc": files.read_json(metrics_path).get("auc"),
        **{f"{k}_as_trained": before[k] for k in SUMMARY_KEYS},
        **{f"{k}_recalibrated": after[k] for k in SUMMARY_KEYS},
        **({"layers": layers} if per_layer else {}),
    }
