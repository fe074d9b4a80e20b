"""Training throughput of this project's PIADE beside the authors' released code, side by side in one
process, in interleaved rounds.

    python benchmarks/bench_vs_authors.py --authors-code PATH/TO/PIADE-checkout \\
        --batch-size 60 --sizes 120 --precision fp32 bf16 --rounds 5 --threads 1 --json results.json

Contestants, each measured in every round, one after the other, so that the load of a shared machine
falls on all of them alike:

* ``ours:<preset>:<precision>`` for each preset of ``--presets`` and precision of ``--precision``: the
  library's own training step, ``Trainer.step`` (what ``piade train`` runs for every batch), with the
  settings of :mod:`piade_lib.engine.precision` (autocast, memory format, fused Adam), i.e. forward,
  ``PiadeLoss.per_image`` (MSE + perceptual VGG11 + 1 - SSIM) and the per-term sums on the device,
  backward, Adam step. (The Trainer reads the sums back once per epoch, which is left out, as data loading is.)
* ``authors`` (with ``--authors-code``): the training step of the authors' ``train.py``, built from
  their own modules (``capsmod.PSPNet``, ``vgg_percep_loss.VGGPerceptualLoss``, ``pytorch_ssim.SSIM``)
  and the same operations in the same order: ``model.zero_grad()``, forward, ``F.mse_loss`` +
  ``-ssim(img, recon)`` + perceptual, ``loss.item()``, ``backward()``, ``Adam(lr=1e-3,
  weight_decay=1e-3).step()``. Left out: their TensorBoard logging of every batch (I/O, not training
  compute) and data loading (here as for ours: one in-memory batch of random images).
  ``--authors-precision bf16`` adds ``authors:bf16``, their step with the forward under the same CPU
  bf16 autocast and channels_last as ours: not what their code does, but it separates what precision
  buys from what the implementation buys.

Shims applied at run time to the authors' code (their files are not modified):

1. their folder is put on ``sys.path`` (their modules import each other as top-level modules);
2. ``torchvision.models.vgg11`` is replaced, while ``VGGPerceptualLoss`` is built, by a function that
   ignores ``pretrained=True`` and builds VGG11 with random weights (no download; the cost of a step
   does not depend on the weights; ours runs with random weights too); ``PSPNet(pretrained=False)``
   likewise builds its ResNet50 with random weights (their constructor's own argument);
3. nothing else: on a machine without CUDA their ``Config.USE_CUDA`` is False and the model code runs
   on the CPU as written; the ``.cuda()`` calls of their ``train.py`` are not executed because the step
   is rebuilt here. With ``--device cuda`` the models and batches are moved to the GPU.

CPU memory: our contestants run with the malloc settings that the library's ``Trainer`` sets when it trains
on the CPU (:mod:`piade_lib.engine.cpu_allocator`: large blocks stay in the heap between steps), the
``authors`` contestant with glibc's own settings, as their code runs. Both are process settings, so they
are switched before each contestant's step. ``--authors-allocator tuned`` adds ``authors:tuned-malloc``,
their step with our settings: it separates what the allocator buys from what the implementation buys.

Their code is written for 120x120 images only (``decoder1(4)`` and ``decoder2(640)`` are hard-wired
to ResNet50's 4x4 features of a 120x120 input); at other sizes the ``authors`` contestant is skipped.

Reported per contestant: images/s of the median and of the best (fastest) timed step over all rounds,
the ratio of each ``ours`` contestant to ``authors`` (median to median, best to best), and the work of
one step in GFLOP (torch's ``FlopCounterMode``: convolutions and matrix products, forward and backward,
counted once in an extra untimed step) with the GFLOP/s of the median step; and, as a ceiling, the
GFLOP/s of a 2048x2048 matrix product in float32 and bf16 on the same device
(``machine.matmul_peak_gflop_s``). The two presets are different networks (``paper``: ResNet18 without
the max-pool, so its first stage runs at 60x60; ``authors_code`` and the authors' code: ResNet50 with
it); GFLOP/s separates what an implementation makes of the hardware from what its architecture costs. The 1-minute
load average is recorded each round. Use the same ``--threads`` for everything (torch's intra-op
threads are per process, so all contestants share the setting); on a shared 2-core machine 1 thread
gives the steadiest figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.engine import cpu_allocator  # noqa: E402
from piade_lib.engine import precision as prec  # noqa: E402
from piade_lib.engine.provenance import code_provenance, recorded_args  # noqa: E402
from piade_lib.engine.trainer import Trainer  # noqa: E402
from piade_lib.model.losses import PiadeLoss  # noqa: E402
from piade_lib.model.network import build_model  # noqa: E402
from piade_lib.presets import PRESETS, get_preset  # noqa: E402

AUTHORS_SIZE = 120  # the only image size the released code supports
AUTHORS_LR = 1e-3  # their train.py: Adam(model.parameters(), lr=0.001, weight_decay=0.001)
AUTHORS_WEIGHT_DECAY = 1e-3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------------
# contestants: each is a callable running one training step on its own batch
# ---------------------------------------------------------------------------------------------
def ours_step(
    preset: str, size: int, batch: int, device: torch.device, precision: str, compile: bool = False
) -> tuple[Callable[[], None], dict[str, Any]]:
    """One training step of piade_lib: :meth:`Trainer.step` (what ``piade train`` runs for every batch), on
    one batch held on the device, with the settings of piade_lib.engine.precision."""
    torch.manual_seed(0)
    p = get_preset(preset)
    trainer = Trainer(
        build_model(preset, image_size=size, n_vectors=2).to(device),
        PiadeLoss(preset).to(device),
        torch.rand(batch, 3, size, size),
        lr=p.lr,
        weight_decay=p.weight_decay,
        batch_size=batch,
        seed=0,
        precision=precision,
    )
    if compile:  # the Trainer compiles on CUDA only; forced here on any device, to measure it
        trainer.forward_loss = torch.compile(trainer._forward_loss)
    trainer.model.train()
    x = trainer.images

    def step() -> None:
        trainer.step(x)

    allocator = "tuned" if device.type == "cpu" else None  # what Trainer and score_dataset set on the CPU
    info = {
        "settings": trainer.precision.to_dict(),
        "fused_adam": bool(trainer.optimizer.defaults.get("fused")),
        "compile": compile,
        "cpu_allocator": allocator,
    }
    return _under_allocator(step, allocator), info


def _under_allocator(step: Callable[[], None], allocator: str | None) -> Callable[[], None]:
    """``step`` run under the malloc ``allocator`` policy (piade_lib.engine.cpu_allocator), a process setting
    switched before each step since contestants with different policies share this process; None: as is."""
    if allocator is None:
        return step

    def under() -> None:
        with cpu_allocator.policy(allocator):
            step()

    return under


@contextlib.contextmanager
def _authors_imports(code_dir: Path) -> Iterator[None]:
    """Shims 1 and 2: their folder on sys.path, torchvision's vgg11 without the ImageNet download."""
    import torchvision

    original_vgg11 = torchvision.models.vgg11

    def vgg11_random(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return original_vgg11(weights=None, **kwargs)

    sys.path.insert(0, str(code_dir))
    torchvision.models.vgg11 = vgg11_random
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation warning for pretrained=
            yield
    finally:
        torchvision.models.vgg11 = original_vgg11


def check_authors_code(code_dir: Path) -> None:
    """Refuses (one line) a folder that lacks the files of the authors' repository that the step imports."""
    missing = [
        f for f in ("capsmod.py", "vgg_percep_loss.py", "pytorch_ssim/__init__.py") if not (code_dir / f).is_file()
    ]
    if missing:
        raise SystemExit(f"--authors-code {code_dir}: not a checkout of the authors' repository (missing {missing})")


def authors_step(
    code_dir: Path, batch: int, device: torch.device, precision: str = "fp32", allocator: str = "default"
) -> tuple[Callable[[], None], dict[str, Any]]:
    """The training step of the authors' train.py (see the module docstring), on one in-memory batch."""
    check_authors_code(code_dir)
    with _authors_imports(code_dir):
        import capsmod  # type: ignore[import-not-found]
        import pytorch_ssim  # type: ignore[import-not-found]
        import vgg_percep_loss  # type: ignore[import-not-found]

        torch.manual_seed(0)
        with contextlib.redirect_stdout(sys.stderr):  # PSPNet prints "initializing model"
            model = capsmod.PSPNet(pretrained=False).to(device)
        perc_loss = vgg_percep_loss.VGGPerceptualLoss(resize=False).to(device)
    ssim_loss = pytorch_ssim.SSIM()
    optimizer = torch.optim.Adam(model.parameters(), lr=AUTHORS_LR, weight_decay=AUTHORS_WEIGHT_DECAY)
    model.train()
    settings = prec.resolve(device, precision)
    img = torch.rand(batch, 3, AUTHORS_SIZE, AUTHORS_SIZE, device=device)
    if precision != "fp32":  # not their code: the same autocast and memory format as ours, for comparison
        prec.prepare_model(model, device, settings)
        prec.prepare_loss(perc_loss, device, settings)
        img = prec.prepare_batch(img, device, settings)

    use_allocator = allocator if device.type == "cpu" else None

    def step() -> None:
        model.zero_grad()
        with prec.autocast(device, settings):
            reconstruction, res, IF, vectors = model(img)
        reconstruction = reconstruction.float()
        loss1 = F.mse_loss(reconstruction, img, reduction="mean")
        loss2 = -ssim_loss(img, reconstruction)
        loss3 = perc_loss(reconstruction, img)
        loss = loss1 + 1.0 * loss2 + 1.0 * loss3
        loss.item()
        loss.backward()
        optimizer.step()

    info = {
        "settings": settings.to_dict(),
        "fused_adam": False,
        "compile": False,
        "cpu_allocator": use_allocator,
        "note": "their train.py step; TensorBoard logging and data loading left out",
    }
    return _under_allocator(step, use_allocator), info


def matmul_peak_gflop_s(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of the fastest of ``repeats`` (n x n) @ (n x n) products in ``dtype``: what this device's
    best-tuned kernel reaches, a ceiling for the GFLOP/s of the training steps."""
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (kernel selection, memory)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def count_flops(step: Callable[[], None]) -> int:
    """Floating-point operations of one step (forward, backward and optimiser) as torch's ``FlopCounterMode``
    counts them: the matrix products and convolutions, 2 per multiply-add; elementwise work is not counted.
    The step runs once, untimed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def build(kind: str, kw: dict[str, Any], device: torch.device) -> tuple[Callable[[], None], dict[str, Any]]:
    """A contestant in this process: ``kind`` "ours" (ours_step) or "authors" (authors_step)."""
    return (ours_step if kind == "ours" else authors_step)(device=device, **kw)


def _worker(conn: Any, kind: str, kw: dict[str, Any], device: str, threads: int) -> None:
    """--isolate: one contestant in a process of its own, stepping on the parent's command."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    step, info = build(kind, kw, dev)
    conn.send(info)
    while (command := conn.recv()) in ("step", "flops"):
        if command == "flops":
            conn.send(count_flops(step))
            continue
        step()
        _sync(dev)
        conn.send(None)


class _Remote:
    """A contestant's step run in another process: calling it returns when the step there is done."""

    def __init__(self, conn: Any, proc: Any) -> None:
        self.conn, self.proc = conn, proc

    def __call__(self) -> None:
        self.conn.send("step")
        self.conn.recv()

    def flops(self) -> int:
        self.conn.send("flops")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=60)


def isolated(kind: str, kw: dict[str, Any], device: str, threads: int) -> tuple[Callable[[], None], dict[str, Any]]:
    """--isolate: the contestant built in a spawned process of its own, so that each program has its own
    heap, as when it runs alone; this process still interleaves the steps."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, kind, kw, device, threads), daemon=True)
    proc.start()
    return _Remote(conn, proc), {**conn.recv(), "process": "isolated"}


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def run(
    contestants: dict[str, tuple[Callable[[], None], dict[str, Any]]],
    device: torch.device,
    rounds: int,
    steps_per_round: int,
    warmup: int,
    log: Callable[[str], None],
) -> tuple[dict[str, list[float]], dict[str, float], list[float | None], dict[str, int | None]]:
    """Warm every contestant up and count its FLOPs per step (one more untimed step; not for compiled
    contestants, whose kernels the counter does not see), then ``rounds`` rounds of ``steps_per_round``
    timed steps each, in turn."""
    first: dict[str, float] = {}
    flops: dict[str, int | None] = {}
    for name, (step, info) in contestants.items():
        t0 = time.perf_counter()
        step()
        _sync(device)
        first[name] = time.perf_counter() - t0  # includes compilation for a compiled model
        for _ in range(max(warmup - 1, 0)):
            step()
        _sync(device)
        flops[name] = (
            None if info.get("compile") else (step.flops() if isinstance(step, _Remote) else count_flops(step))
        )
        _sync(device)
        gflop = "" if flops[name] is None else f", {flops[name] / 1e9:.0f} GFLOP per step"
        log(f"warmed up {name} (first step {first[name]:.1f} s{gflop})")
    times: dict[str, list[float]] = {name: [] for name in contestants}
    loads: list[float | None] = []
    for r in range(rounds):
        for name, (step, _) in contestants.items():
            for _ in range(steps_per_round):
                t0 = time.perf_counter()
                step()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        loads.append(loadavg())
        log(
            f"round {r + 1}/{rounds} (load {loads[-1]}): "
            + ", ".join(f"{n} {statistics.median(times[n][-steps_per_round:]):.2f} s" for n in contestants)
        )
    return times, first, loads, flops


def summarise(
    times: dict[str, list[float]], batch: int, flops: dict[str, int | None] | None = None
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, ts in times.items():
        f = (flops or {}).get(name)
        out[name] = {
            "median_step_s": statistics.median(ts),
            "best_step_s": min(ts),
            "median_img_s": batch / statistics.median(ts),
            "best_img_s": batch / min(ts),
            "steps": len(ts),
            "gflop_per_step": None if f is None else f / 1e9,
            "median_gflop_s": None if f is None else f / 1e9 / statistics.median(ts),
        }
    return out


def table(summary: dict[str, dict[str, float]], reference: str | None) -> str:
    rows = [
        f"{'contestant':34s} {'median img/s':>13s} {'best img/s':>11s} "
        f"{'x authors (median)':>19s} {'x authors (best)':>17s} {'GFLOP/step':>11s} {'GFLOP/s (median)':>17s}"
    ]
    for name, s in summary.items():
        if reference and reference in summary and name != reference:
            r = summary[reference]
            ratios = f"{s['median_img_s'] / r['median_img_s']:19.2f} {s['best_img_s'] / r['best_img_s']:17.2f}"
        else:
            ratios = f"{'':19s} {'':17s}"
        work = (
            f"{s['gflop_per_step']:11.0f} {s['median_gflop_s']:17.0f}"
            if s.get("gflop_per_step") is not None
            else f"{'':11s} {'':17s}"
        )
        rows.append(f"{name:34s} {s['median_img_s']:13.2f} {s['best_img_s']:11.2f} {ratios} {work}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--authors-code",
        type=Path,
        default=None,
        help="a checkout of the authors' repository (pankajmishra000/PIADE); without it only ours runs",
    )
    ap.add_argument("--batch-size", type=int, default=60, help="images per step (the released code's batch: 60)")
    ap.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[120],
        choices=[32, 120],
        help="image sizes (the authors' code runs at 120 only)",
    )
    ap.add_argument("--presets", nargs="+", default=["paper", "authors_code"], choices=sorted(PRESETS))
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=list(prec.PRECISIONS),
        help="precisions of our contestants (piade_lib.engine.precision)",
    )
    ap.add_argument(
        "--authors-precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="fp32: their code as released; bf16: also their step under our bf16 autocast + channels_last",
    )
    ap.add_argument(
        "--authors-allocator",
        nargs="+",
        default=["default"],
        choices=list(cpu_allocator.CHOICES),
        help="CPU only. default: their code as released (glibc's malloc settings); tuned: also their step "
        "with the malloc settings our Trainer sets (piade_lib.engine.cpu_allocator)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps-per-round", type=int, default=1, help="timed steps per contestant and round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contestant before the rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, for every contestant")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also torch.compile'd copies of our contestants (their first step, mostly compilation, is "
        "reported as first_step_s)",
    )
    ap.add_argument(
        "--isolate",
        action="store_true",
        help="each contestant in a process of its own (still interleaved, step by step, by this one): its own "
        "heap, as when each program runs alone; the authors' code then runs with glibc's settings untouched",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the measurements to this JSON file")
    args = ap.parse_args(argv)
    if args.authors_code is not None:
        check_authors_code(args.authors_code)  # before minutes of measuring, not after

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    machine = {
        "cpu": cpu_model_name(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu_native_bf16": prec.cpu_has_native_bf16(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    machine["matmul_peak_gflop_s"] = {
        name: round(matmul_peak_gflop_s(device, dtype), 1)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    log(f"machine: {machine}")
    results: dict[str, Any] = {
        "machine": machine,
        "code": code_provenance(),
        "args": recorded_args(args),
        "sizes": {},
    }
    if args.authors_code is not None:
        results["args"]["authors_code"] = "(checkout of pankajmishra000/PIADE)"
    for size in args.sizes:
        specs: dict[str, tuple[str, dict[str, Any]]] = {}
        for precision in args.precision:
            for preset in args.presets:
                kw = {"preset": preset, "size": size, "batch": args.batch_size, "precision": precision}
                specs[f"ours:{preset}:{precision}"] = ("ours", kw)
                if args.compile:
                    specs[f"ours:{preset}:{precision}:compiled"] = ("ours", {**kw, "compile": True})
        reference = None
        if args.authors_code is not None and size == AUTHORS_SIZE:
            for precision in args.authors_precision:
                for allocator in args.authors_allocator:
                    name = "authors" + ("" if precision == "fp32" else f":{precision}")
                    name += "" if allocator == "default" else f":{allocator}-malloc"
                    if args.isolate and allocator == "default":
                        allocator = None  # a process of its own: glibc's settings as they are, untouched
                    kw = {"code_dir": args.authors_code.resolve(), "batch": args.batch_size, "precision": precision}
                    specs[name] = ("authors", {**kw, "allocator": allocator})
            reference = "authors" if "authors" in specs else None
        elif args.authors_code is not None:
            log(f"size {size}: the authors' code supports {AUTHORS_SIZE}x{AUTHORS_SIZE} only; ours alone")
        if args.isolate:
            contestants = {name: isolated(kind, kw, args.device, args.threads) for name, (kind, kw) in specs.items()}
        else:
            contestants = {name: build(kind, kw, device) for name, (kind, kw) in specs.items()}
        log(f"size {size}x{size}, batch {args.batch_size}: {list(contestants)}")
        load_before = loadavg()
        times, first, loads, flops = run(contestants, device, args.rounds, args.steps_per_round, args.warmup, log)
        summary = summarise(times, args.batch_size, flops)
        print(
            f"\n{size}x{size}, batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds x "
            f"{args.steps_per_round} step(s); {machine['cpu']}, torch {machine['torch']}; 1-min load average "
            f"{load_before} before, {min(x for x in loads if x is not None) if any(loads) else None}-"
            f"{max(x for x in loads if x is not None) if any(loads) else None} during the rounds"
        )
        print(table(summary, reference))
        results["sizes"][str(size)] = {
            "reference": reference,
            "summary": summary,
            "step_times_s": times,
            "first_step_s": first,
            "load_average_before": load_before,
            "load_average_per_round": loads,
            "contestants": {n: info for n, (_, info) in contestants.items()},
            "ratios_to_authors": {
                n: {
                    "median": s["median_img_s"] / summary[reference]["median_img_s"],
                    "best": s["best_img_s"] / summary[reference]["best_img_s"],
                }
                for n, s in summary.items()
                if reference and n != reference
            },
        }
        for step, _ in contestants.values():
            getattr(step, "close", lambda: None)()
        contestants.clear()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
