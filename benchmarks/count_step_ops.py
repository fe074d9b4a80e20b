"""How many operators one training step dispatches: what a GPU step launches, counted on any machine.

At 32x32 a PIADE step on an H100 waits on the latency of its many small kernels, not on arithmetic
(benchmarks/README.md). Each aten operator that computes is (at least) one kernel launch in eager mode, so
the count of computing operators per step is a machine-independent measure of that cost: it does not grow
with the batch, and it is what CUDA graphs (``compile: reduce-overhead``) replay without the host and what
stacking K models (``stacked_step.py``) shares among K models.

Counted with a ``TorchDispatchMode`` around ``Trainer.step`` (forward pass, loss, backward pass, fused Adam:
the library's own step, eager) and around ``StackedStep.step`` for each ``--stack K``, after a warm-up step,
on random images. Operators that only make a view (``view``, ``transpose``, ``expand``, ...) launch nothing
and are counted apart. The CPU's operators are the GPU's, except where a backend picks another kernel (e.g.
cuDNN's convolutions; fused Adam is one operator per step on both).

    python benchmarks/count_step_ops.py --sizes 32 120 --stack 1 4 10 --json ops.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.engine.provenance import code_provenance, recorded_args  # noqa: E402
from piade_lib.engine.trainer import Trainer  # noqa: E402
from piade_lib.model.losses import PiadeLoss  # noqa: E402
from piade_lib.model.network import build_model  # noqa: E402
from piade_lib.presets import PRESETS, get_preset  # noqa: E402

# operators that return a view of their input (or its metadata): no kernel is launched for them
VIEW_OPS = frozenset(
    {
        "aten.view",
        "aten._unsafe_view",
        "aten.reshape",
        "aten.t",
        "aten.transpose",
        "aten.permute",
        "aten.expand",
        "aten.as_strided",
        "aten.squeeze",
        "aten.unsqueeze",
        "aten.slice",
        "aten.select",
        "aten.alias",
        "aten.detach",
        "aten.split",
        "aten.split_with_sizes",
        "aten.unbind",
        "aten.chunk",
        "aten.narrow",
        "aten.diagonal",
        "aten.unfold",
        "aten.view_as_real",
        "aten.view_as_complex",
        "aten.lift_fresh",
        "aten._reshape_alias",
    }
)


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched inside the block, by name (the overload packet)."""

    def __init__(self) -> None:
        super().__init__()
        self.count: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def split(self) -> dict[str, int]:
        views = sum(n for name, n in self.count.items() if name in VIEW_OPS)
        total = sum(self.count.values())
        return {"computing": total - views, "views": views, "total": total}


def count_trainer_step(preset: str, size: int, batch: int, precision: str = "fp32") -> dict[str, Any]:
    """Operators of one ``Trainer.step`` (after one warm-up step) of ``preset`` at ``size``, batch ``batch``."""
    torch.manual_seed(0)
    p = get_preset(preset)
    model = build_model(preset, image_size=size, n_vectors=2, pretrained=False)
    images = torch.rand(batch, 3, size, size)
    trainer = Trainer(
        model,
        PiadeLoss(preset, pretrained=False),
        images,
        lr=p.lr,
        weight_decay=p.weight_decay,
        batch_size=batch,
        seed=0,
        precision=precision,
    )
    x = images.contiguous(memory_format=trainer.memory_format)
    trainer.step(x)  # warm-up: Adam's state
    with OpCounter() as counter:
        trainer.step(x)
    return {"kind": "trainer", "models": 1, **counter.split(), "top": counter.count.most_common(12)}


def count_stacked_step(preset: str, size: int, batch: int, k: int, precision: str = "fp32") -> dict[str, Any]:
    """Operators of one ``StackedStep.step`` of ``k`` models (after a warm-up step), each on its own batch."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when this file is imported
    try:
        from stacked_step import StackedStep
    finally:
        sys.path.pop(0)

    torch.manual_seed(0)
    p = get_preset(preset)
    models = [build_model(preset, image_size=size, n_vectors=2, pretrained=False) for _ in range(k)]
    step = StackedStep(
        models,
        PiadeLoss(preset, pretrained=False),
        lr=p.lr,
        weight_decay=p.weight_decay,
        device="cpu",
        precision=precision,
    )
    xs = torch.rand(k, batch, 3, size, size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        step.step(xs)
        with OpCounter() as counter:
            step.step(xs)
    return {"kind": "stacked", "models": k, **counter.split(), "top": counter.count.most_common(12)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["paper", "authors_code"], choices=sorted(PRESETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 120], choices=[32, 120])
    ap.add_argument(
        "--batch-size", type=int, default=2, help="images per model and step (the count does not grow with it)"
    )
    ap.add_argument("--stack", nargs="*", type=int, default=[], help="also StackedStep with K models, for each K")
    ap.add_argument("--json", type=Path, default=None, help="write the counts to this JSON file")
    args = ap.parse_args(argv)
    if args.batch_size < 2:
        ap.error("--batch-size: BatchNorm needs at least 2 images per batch")
    if any(k < 1 for k in args.stack):
        ap.error("--stack: the number of models per step, at least 1")
    torch.set_num_threads(1)
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            found = [count_trainer_step(preset, size, args.batch_size)]
            found += [count_stacked_step(preset, size, args.batch_size, k) for k in args.stack]
            for row in found:
                rows.append({"preset": preset, "size": size, "batch": args.batch_size, **row})
                per_model = row["computing"] / row["models"]
                print(
                    f"{preset:>12} {size:>3}x{size:<3} {row['kind']:>7} x{row['models']:<2}: {row['computing']:>6} "
                    f"computing operators per step ({per_model:,.0f} per model), {row['views']} views",
                    flush=True,
                )
    if args.json:
        payload = {"code": code_provenance(), "torch": torch.__version__, "args": recorded_args(args), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
