"""What the training step does on a real GPU, where a CPU cannot show it: skipped without CUDA (CI has none).

Run on a lent GPU machine first, before any timing (``benchmarks/gpu_session.sh check``):

* the step never waits for the GPU, and an epoch waits once (``torch.cuda.set_sync_debug_mode``: every
  synchronizing call, a copy from pageable host memory included, errors or warns);
* ``compile: reduce-overhead`` replays the step's forward pass and loss as CUDA graphs (inductor skipped none)
  and trains as eager does.

``tests/test_step_hot_path.py`` checks the same on the CPU as far as a CPU can (no device read in the step,
no CPU tensor in the forward pass and loss on fake CUDA tensors, one traced graph).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from piade_lib.engine.trainer import Trainer
from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model
from piade_lib.presets import get_preset

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (on a lent GPU machine: benchmarks/gpu_session.sh check)"
)

BATCH, N_IMAGES, SIZE = 8, 40, 32  # 5 steps per epoch


def _trainer(preset: str, model: torch.nn.Module | None = None, compile: bool | str = False) -> Trainer:
    torch.manual_seed(0)
    p = get_preset(preset)
    model = model if model is not None else build_model(preset, image_size=SIZE, n_vectors=2, pretrained=False)
    images = torch.rand(N_IMAGES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).cuda()
    loss_fn = PiadeLoss(preset, pretrained=False)
    return Trainer(
        model.cuda(),
        loss_fn.cuda(),
        images,
        lr=p.lr,
        weight_decay=p.weight_decay,
        batch_size=BATCH,
        seed=0,
        compile=compile,
    )


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_a_step_never_waits_for_the_gpu_and_an_epoch_waits_once(preset: str) -> None:
    trainer = _trainer(preset)
    trainer.train_epoch(last_step=10**9)  # warm-up: Adam's state, cuDNN's algorithm choice
    x = trainer.images[:BATCH].contiguous(memory_format=trainer.memory_format)
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")  # a synchronizing call in the steps raises
        for _ in range(3):
            trainer.step(x)
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_epoch(last_step=10**9)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, f"an epoch should wait for the GPU once (its loss sums); it waited {len(syncs)} times"


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_reduce_overhead_replays_cuda_graphs_and_trains_as_eager(preset: str) -> None:
    """Two runs in a row in one process, as the local executor runs them: the second run's new model reuses
    the compiled graph and records CUDA graphs of its own (its weights are new static inputs)."""
    from torch._inductor import cudagraph_trees

    torch._dynamo.reset()
    counters.clear()
    for run in range(2):
        torch.manual_seed(100 + run)
        base = build_model(preset, image_size=SIZE, n_vectors=2, pretrained=False)
        eager = _trainer(preset, copy.deepcopy(base))
        graphs = _trainer(preset, copy.deepcopy(base), compile="reduce-overhead")
        graphs.loss_fn.load_state_dict(eager.loss_fn.state_dict())  # the same (random) VGG head
        rows_eager = [eager.train_epoch(last_step=10**9).means for _ in range(3)]
        rows_graphs = [graphs.train_epoch(last_step=10**9).means for _ in range(3)]
        skips = counters["inductor"]["cudagraph_skips"]
        assert skips == 0, f"run {run}: inductor skipped CUDA graphs {skips} times (why: TORCH_LOGS=perf_hints)"
        # bf16 autocast in both; inductor fuses in another order, so the first epoch agrees to bf16's precision
        # and the trajectories may drift apart slowly after it (tests/test_precision.py states the bf16 tolerance)
        for term, value in rows_eager[0].items():
            assert rows_graphs[0][term] == pytest.approx(value, rel=2e-2), (run, term)
        for later_eager, later_graphs in zip(rows_eager[1:], rows_graphs[1:], strict=True):
            assert later_graphs["total"] == pytest.approx(later_eager["total"], rel=1e-1), run
    manager = cudagraph_trees.get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    assert manager is not None and any(manager.roots.values()), "no CUDA graph was recorded"


@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
def test_stacked_models_replay_cuda_graphs_and_step_as_each_model_alone() -> None:
    """benchmarks/stacked_step.py (bench_packing.py --stack, an experiment): K models in one batched step under
    reduce-overhead record CUDA graphs with no skip, and each model's first loss is the one it has alone."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from stacked_step import StackedStep
    finally:
        sys.path.pop(0)

    torch._dynamo.reset()
    counters.clear()
    p = get_preset("paper")
    torch.manual_seed(0)
    models = [build_model("paper", image_size=SIZE, n_vectors=2, pretrained=False) for _ in range(3)]
    alone = [_trainer("paper", copy.deepcopy(m)) for m in models]
    step = StackedStep(
        models,
        copy.deepcopy(alone[0].loss_fn),
        lr=p.lr,
        weight_decay=p.weight_decay,
        device="cuda",
        compile="reduce-overhead",
    )
    xs = torch.stack([t.images[:BATCH] for t in alone])
    first = step.step(xs).tolist()
    for _ in range(4):
        step.step(xs)
    assert counters["inductor"]["cudagraph_skips"] == 0, "inductor skipped CUDA graphs (why: TORCH_LOGS=perf_hints)"
    for k, trainer in enumerate(alone):
        loss, _ = trainer.forward_loss(trainer.images[:BATCH].contiguous(memory_format=trainer.memory_format))
        assert first[k] == pytest.approx(float(loss.detach()), rel=2e-2), k
