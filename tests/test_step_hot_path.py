"""The training step's hot path, checked on the CPU for what matters on a GPU: the step never reads the
device (a read is a GPU sync: the host then waits for every queued kernel instead of queueing the next
step), an epoch reads it once, the train split's range is checked once, and the forward pass and loss
trace as one graph (so ``compile``, and with "reduce-overhead" CUDA graphs, covers the loss too)."""

from __future__ import annotations

import collections
import types

import pytest
import torch
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from piade_lib.engine import folders
from piade_lib.engine import precision as prec
from piade_lib.engine.compile_modes import COMPILE_MODES, compile_mode
from piade_lib.engine.config import RunConfig
from piade_lib.engine.scoring import ssim_map
from piade_lib.engine.trainer import Trainer, compile_forward_loss
from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model
from piade_lib.presets import get_preset

# aten ops that copy a device value to the host (tensor.item(), float(t), int(t), bool(t), data-dependent shapes)
DEVICE_READS = frozenset(
    {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique2", "aten.equal"}
)


class DeviceReads(TorchDispatchMode):
    """Counts the aten ops of :data:`DEVICE_READS` dispatched inside the block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.count: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in DEVICE_READS:
            self.count[name] += 1
        return func(*args, **(kwargs or {}))


class CpuTensors(TorchDispatchMode):
    """Counts, by name, the aten ops inside the block that take or make a tensor on the CPU. With the model and
    the images on a GPU, each is host work in the step, and a CPU tensor that meets the GPU is copied there
    from pageable memory: a copy that waits for every kernel queued before it (a GPU sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.count: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_flatten((args, kwargs, out))[0]):
            self.count[str(func.overloadpacket)] += 1
        return out


def _fake_cuda() -> FakeTensorMode:
    """A mode in which tensors on "cuda" are fake (shapes and devices, no data): the step's ops on a GPU,
    followed on a machine without one."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        try:
            torch.empty(1, device="cuda")
        except (RuntimeError, AssertionError) as exc:  # a torch built without CUDA
            pytest.skip(f"this torch cannot make fake CUDA tensors: {exc}")
    return mode


def _trainer(preset: str, n_images: int = 7, batch: int = 2, size: int = 32) -> Trainer:
    torch.manual_seed(0)
    p = get_preset(preset)
    model = build_model(preset, image_size=size, n_vectors=2, pretrained=False)
    loss_fn = PiadeLoss(preset, pretrained=False)
    images = torch.rand(n_images, 3, size, size)
    return Trainer(model, loss_fn, images, lr=p.lr, weight_decay=p.weight_decay, batch_size=batch, seed=0)


def test_the_counter_sees_a_read() -> None:
    """The check below can fail: float() of a tensor, and the loss's per-batch range check, are reads."""
    with DeviceReads() as reads:
        float(torch.ones(3).sum())
        PiadeLoss.check_range(torch.rand(2, 3, 4, 4))
    assert reads.count["aten._local_scalar_dense"] == 3


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_a_step_never_reads_the_device_and_an_epoch_reads_it_once(preset: str, single_thread) -> None:
    trainer = _trainer(preset)
    x = trainer.images[:2]
    with DeviceReads() as reads:
        sums = trainer.step(x)
    assert reads.count == {}, f"Trainer.step read the device: {dict(reads.count)}"
    assert sums.shape == (4,) and bool(torch.isfinite(sums).all())
    with DeviceReads() as reads:
        result = trainer.train_epoch(last_step=10**9)  # 3 batches (7 images, batch 2: the last one-image batch dropped)
    assert result.step == 3 and trainer.steps_per_epoch == 3
    # the one read of an epoch is a single tolist() of its sums, which does not dispatch on the CPU
    assert reads.count == {}, f"train_epoch read the device per batch: {dict(reads.count)}"
    assert set(result.means) == {"mse", "perceptual", "ssim_loss", "total"}


def test_the_cpu_tensor_counter_sees_a_copy_to_the_gpu() -> None:
    """The check below can fail: a window built on the CPU and copied to the GPU, as the SSIM used to."""
    with _fake_cuda(), CpuTensors() as ops:
        x = torch.ones(3, device="cuda")
        (torch.arange(3, dtype=torch.float).to(x.device) * x).sum()
    assert ops.count["aten.arange"] == 1 and ops.count["aten._to_copy"] == 1


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
@pytest.mark.parametrize("size", [32, 120])
def test_on_a_gpu_the_forward_pass_and_loss_make_no_cpu_tensor(preset: str, size: int) -> None:
    """Trainer._forward_loss (the network, SSIM, the VGG head, the term sums) with the model and a batch on a
    (fake) GPU: no op touches the CPU, so nothing is copied to the GPU and waited for in a step, and a CUDA
    graph can hold the whole function. (The SSIM built its Gaussian window and filter matrices on the CPU:
    45 copies to the GPU per step, each a sync.) The backward pass is not followed: autograd's engine needs
    a real GPU; it runs the derivatives of these same ops, on the same devices."""
    model = build_model(preset, image_size=size, n_vectors=2, pretrained=False).train()
    loss_fn = PiadeLoss(preset, pretrained=False)
    with _fake_cuda():
        model.to("cuda")
        loss_fn.to("cuda")
        x = torch.rand(4, 3, size, size, device="cuda")
        owner = types.SimpleNamespace(precision=prec.resolve("cuda", "fp32"), model=model, loss_fn=loss_fn)
        with CpuTensors() as ops:
            loss, sums = Trainer._forward_loss(owner, x)
            maps = ssim_map(x, x)  # the anomaly maps' SSIM shares the window
    assert ops.count == {}, f"the step's forward pass and loss touched the CPU: {dict(ops.count)}"
    assert loss.device.type == sums.device.type == maps.device.type == "cuda" and sums.shape == (4,)


def test_the_train_split_range_is_checked_once_when_the_trainer_is_built() -> None:
    p = get_preset("paper")
    model = build_model("paper", image_size=32, n_vectors=2, pretrained=False)
    images = torch.rand(4, 3, 32, 32) * 255  # pixel values, not [0, 1]
    with pytest.raises(ValueError, match=r"in \[0, 1\]; got values in \[0(\.\d+)?, 25\d"):
        Trainer(model, PiadeLoss("paper"), images, lr=p.lr, weight_decay=p.weight_decay, batch_size=2, seed=0)


def test_the_step_gives_the_loss_the_unchecked_path_gives(single_thread) -> None:
    """Skipping the per-batch range check changes no number: the step's loss terms equal per_image's."""
    trainer = _trainer("paper", n_images=4)
    x = trainer.images[:2]
    loss, term_sums = trainer.forward_loss(x)
    recon = trainer.model(x).reconstruction
    terms = trainer.loss_fn.per_image(recon.float(), x)
    assert torch.equal(loss, terms["total"].mean())
    assert torch.equal(term_sums, torch.stack([terms[t].sum() for t in ("mse", "perceptual", "ssim_loss", "total")]))


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_forward_and_loss_trace_as_one_graph(preset: str, single_thread) -> None:
    """What ``compile`` compiles on CUDA (Trainer._forward_loss) traces without a graph break, forward and
    backward (AOTAutograd), here with torch.compile's backend that runs the traced graphs eagerly."""
    torch._dynamo.reset()
    trainer = _trainer(preset, n_images=4)
    x = trainer.images[:2]
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    eager_loss, eager_sums = trainer.forward_loss(x)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in params]
    trainer.optimizer.zero_grad(set_to_none=True)
    traced = compile_forward_loss(trainer._forward_loss, "default", backend="aot_eager", fullgraph=True)
    loss, sums = traced(x)
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sums, eager_sums, rtol=1e-5, atol=1e-5)
    assert all(p.grad is not None for p in params)
    for p, g in zip(params, eager_grads, strict=True):  # the traced backward gives the eager gradients
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    # the next run's Trainer (a new model) reuses the traced graph: runs of one process compile once
    graphs = counters["stats"]["unique_graphs"]
    other = _trainer(preset, n_images=4)
    compile_forward_loss(other._forward_loss, "default", backend="aot_eager", fullgraph=True)(other.images[:2])
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


def _has_symbolic_shapes(gm: torch.fx.GraphModule) -> bool:
    for node in gm.graph.find_nodes(op="placeholder"):
        value = node.meta.get("example_value")
        if isinstance(value, torch.SymInt):
            return True
        if isinstance(value, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in value.shape):
            return True
    return False


def test_a_smaller_last_batch_gets_a_static_graph_of_its_own(single_thread) -> None:
    """The Trainer's compile (compile_forward_loss) makes one static graph per batch size: an epoch's smaller
    last batch does not turn the full batches' graph into one for any size. The control, torch's default
    (automatic dynamic shapes), does: its second graph has a symbolic batch size."""

    def graphs_for(compile_fn) -> list[bool]:  # per compiled graph: has it symbolic shapes?
        torch._dynamo.reset()
        graphs: list[bool] = []

        def backend(gm, example_inputs):
            graphs.append(_has_symbolic_shapes(gm))
            return gm.forward

        trainer = _trainer("paper", n_images=5)
        compiled = compile_fn(trainer._forward_loss, backend)
        for batch in (3, 2, 3, 2):  # two epochs of 5 images in batches of 3: a full batch, then a smaller one
            compiled(trainer.images[:batch])
        return graphs

    assert graphs_for(lambda fn, backend: compile_forward_loss(fn, "default", backend=backend)) == [
        False,
        False,
    ]
    assert graphs_for(lambda fn, backend: torch.compile(fn, backend=backend)) == [False, True]
    torch._dynamo.reset()


def test_compile_modes_from_a_run_config() -> None:
    assert compile_mode(False) is None and compile_mode(None) is None and compile_mode("none") is None
    assert compile_mode(True) == "default"
    assert [compile_mode(m) for m in COMPILE_MODES] == list(COMPILE_MODES)
    spec = RunConfig(dataset="digits", normal_class="1", device="cpu", compile="reduce-overhead").resolved()
    assert spec.compile == "reduce-overhead"
    assert RunConfig(dataset="digits", normal_class="1", compile=True).resolved().compile == "default"
    assert RunConfig(dataset="digits", normal_class="1").resolved().compile is False
    with pytest.raises(ValueError, match=r"compile must be false, true or a mode of \[.*reduce-overhead.*got 'fast'"):
        RunConfig(dataset="digits", normal_class="1", compile="fast").resolved()


def test_compile_is_an_execution_setting_a_finished_run_keeps() -> None:
    """A run trained without compile is the same run with it (its config hash, and so resume and skip)."""
    base = RunConfig(dataset="digits", normal_class="1", device="cpu").to_dict()
    compiled = RunConfig(dataset="digits", normal_class="1", device="cpu", compile="reduce-overhead").to_dict()
    assert base["compile"] is False and compiled["compile"] == "reduce-overhead"
    assert folders.config_hash(base) == folders.config_hash(compiled)
    assert folders.config_hash(base) != folders.config_hash({**base, "lr": 0.5})


def test_compile_is_ignored_on_the_cpu() -> None:
    p = get_preset("paper")
    model = build_model("paper", image_size=32, n_vectors=2, pretrained=False)
    images = torch.rand(4, 3, 32, 32)
    trainer = Trainer(
        model, PiadeLoss("paper"), images, lr=p.lr, weight_decay=p.weight_decay, batch_size=2, seed=0, compile=True
    )
    assert trainer.compile_mode is None and trainer.forward_loss == trainer._forward_loss
