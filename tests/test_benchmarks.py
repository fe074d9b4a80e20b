"""The side-by-side benchmark script runs, and what it reports is consistent (not how fast anything is)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    yield _load("bench_vs_authors")
    sys.modules.pop("bench_vs_authors", None)


@pytest.fixture(scope="module")
def packing():
    yield _load("bench_packing")
    sys.modules.pop("bench_packing", None)


def test_count_flops_counts_a_convolution_forward_and_backward(bench):
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    w = torch.rand(8, 3, 3, 3, requires_grad=True)

    def step() -> None:
        F.conv2d(x, w).sum().backward()

    forward = 2 * 2 * 8 * 8 * 8 * 3 * 3 * 3  # 2 FLOPs per multiply-add: batch, out-channels, 8x8 outputs, 3x3x3 taps
    assert bench.count_flops(step) == 3 * forward  # backward: the input's and the weight's gradient


def test_the_benchmark_reports_throughput_and_flops_per_contestant(bench, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--batch-size", "4", "--sizes", "32", "--precision", "fp32", "--rounds", "2", "--warmup", "1"]
    assert bench.main([*argv, "--threads", "1", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["code"]) == {"versions", "lock", "git"}  # the figures name the code they measured
    assert payload["code"]["lock"]["file"] and payload["code"]["versions"]["torch"] == torch.__version__
    size = payload["sizes"]["32"]
    assert size["reference"] is None and size["ratios_to_authors"] == {}  # no --authors-code: ours alone
    assert set(size["summary"]) == {"ours:paper:fp32", "ours:authors_code:fp32"}
    for name, s in size["summary"].items():
        assert s["steps"] == 2 and len(size["step_times_s"][name]) == 2
        assert s["median_img_s"] == pytest.approx(4 / s["median_step_s"])
        assert s["best_img_s"] >= s["median_img_s"]
        assert s["gflop_per_step"] > 0
        assert s["median_gflop_s"] == pytest.approx(s["gflop_per_step"] / s["median_step_s"])
    # the paper preset's ResNet18 and the authors_code preset's ResNet50 are different networks: different work
    flops = {n: s["gflop_per_step"] for n, s in size["summary"].items()}
    assert flops["ours:paper:fp32"] != flops["ours:authors_code:fp32"]


def test_the_benchmark_refuses_a_folder_that_is_not_the_authors_code(bench, tmp_path, monkeypatch):
    """At once: before the machine's matmul peak is measured and anything is built."""

    def measured(*_a, **_k):
        raise AssertionError("measured the machine before refusing --authors-code")

    monkeypatch.setattr(bench, "matmul_peak_gflop_s", measured)
    monkeypatch.setattr(bench, "build", measured)
    with pytest.raises(SystemExit, match="not a checkout of the authors' repository"):
        bench.main(["--authors-code", str(tmp_path), "--batch-size", "2", "--rounds", "1", "--warmup", "1"])


def _measurement(preset: str, size: int, packing: int, aggregate: float, warmup: float, compile_=False) -> dict:
    return {
        "preset": preset,
        "size": size,
        "batch": 120,
        "packing": packing,
        "compile": compile_,
        "aggregate_img_s": aggregate,
        "per_run_img_s": aggregate / packing,
        "warmup_seconds": warmup,
        "peak_gib_per_run": 1.0,
    }


def test_the_packing_projection_from_saved_measurements(packing, tmp_path, capsys):
    """--from-json projects from saved files together: the best packing per preset and size, each run's
    start-up, and on 8 devices the larger of the shared work and the longest run."""
    eager = tmp_path / "eager.json"
    graphs = tmp_path / "graphs.json"
    eager.write_text(json.dumps({"measurements": [_measurement("paper", 32, 1, 1000.0, 2.0)]}))
    graphs.write_text(json.dumps({"measurements": [_measurement("paper", 32, 4, 4000.0, 8.0, "reduce-overhead")]}))
    out = tmp_path / "projection.json"
    assert packing.main(["--from-json", str(eager), str(graphs), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["machine"] == {"from_json": ["eager.json", "graphs.json"]} and "git" in payload["code"]
    assert payload["args"]["json"] == "projection.json"  # file names: no path of the machine it ran on
    proj = payload["projection"]
    rows = {r["workload"]: r for r in proj["rows"]}
    assert set(rows) == {"Table 2: CIFAR-10", "ICPR: MNIST", "ICPR: Fashion-MNIST"}  # the paper preset's 32x32 runs
    cifar = rows["Table 2: CIFAR-10"]
    assert (cifar["packing"], cifar["compile"], cifar["start_s"]) == (4, "reduce-overhead", 8.0)
    per_run = 5000 * 400 + (5000 + 10000) / 3  # training-image equivalents of one CIFAR-10 model
    assert cifar["device_hours"] == pytest.approx((10 * per_run / 4000 + 10 * 8.0 / 4) / 3600, abs=1e-3)
    assert cifar["run_hours"] == pytest.approx((per_run / 1000 + 8.0) / 3600, abs=1e-3)
    total = sum(r["device_hours"] for r in proj["rows"])
    assert proj["hours_on_1"] == pytest.approx(total, abs=2e-3)
    longest = max(r["run_hours"] for r in proj["rows"])
    assert proj["hours_on_8"] == pytest.approx(max(total / 8, longest), abs=2e-3)
    assert "projected on 8 device(s)" in capsys.readouterr().out


def test_the_packing_projection_names_a_file_that_holds_no_measurements(packing, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(SystemExit, match=r"--from-json .*notes\.json: not a file of bench_packing\.py --json"):
        packing.main(["--from-json", str(bad)])


def test_the_throughput_benchmark_times_the_trainers_step_and_projects(tmp_path, monkeypatch):
    """bench_throughput times Trainer.step (every step goes through it) and projects hours from its speed."""
    from piade_lib.engine.trainer import Trainer

    throughput = _load("bench_throughput")
    calls = {"n": 0}
    original = Trainer.step

    def counted(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(Trainer, "step", counted)
    out = tmp_path / "throughput.json"
    argv = ["--device", "cpu", "--batch-size", "2", "--iters", "2", "--warmup", "1", "--sizes", "32"]
    threads = torch.get_num_threads()
    try:
        assert throughput.main([*argv, "--presets", "paper", "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("bench_throughput", None)
    assert calls["n"] == 3  # warm-up + timed training steps, all of them the Trainer's
    payload = json.loads(out.read_text())
    assert set(payload["code"]) == {"versions", "lock", "git"}
    (row,) = payload["throughput"]
    assert (row["preset"], row["size"], row["batch"], row["amp"]) == ("paper", 32, 2, "fp32")
    assert row["train_img_s"] >= row["train_img_s_median"] > 0
    cifar = next(r for r in payload["projection_hours"] if r["workload"].startswith("Table 2"))
    assert cifar["train_hours"] == pytest.approx(10 * 5000 * 400 / row["train_img_s"] / 3600, rel=1e-3)


def test_the_history_write_benchmark_measures_in_a_temporary_folder_it_removes(tmp_path):
    bench_history = _load("bench_history_write")
    out = tmp_path / "history.json"
    try:
        assert bench_history.main(["--dir", str(tmp_path), "--epochs", "3", "--json", str(out)]) == 0
        with pytest.raises(SystemExit, match="not a folder"):
            bench_history.main(["--dir", str(tmp_path / "missing")])
    finally:
        sys.modules.pop("bench_history_write", None)
    figures = json.loads(out.read_text())
    assert figures["epochs"] == 3 and 0 < figures["median_ms"] <= figures["total_s"] * 1e3
    assert "git" in figures["code"]
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]  # its folder is gone


def test_the_packing_benchmark_measures_trainer_processes_on_the_cpu(packing, tmp_path, monkeypatch):
    """Two processes train side by side with the library's Trainer; the measurement is consistent."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the spawned processes import bench_packing
    out = tmp_path / "packing.json"
    argv = ["--device", "cpu", "--sizes", "32", "--presets", "paper", "--packing", "2", "--seconds", "1"]
    assert packing.main([*argv, "--batch-size", "2", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    (m,) = payload["measurements"]
    assert (m["preset"], m["size"], m["packing"], m["batch"], m["compile"]) == ("paper", 32, 2, 2, False)
    assert m["aggregate_img_s"] == pytest.approx(2 * m["per_run_img_s"]) and m["aggregate_img_s"] > 0
    assert m["warmup_seconds"] > 0 and m["peak_gib_per_run"] is None  # no CUDA memory on the CPU
    assert m["threads_per_run"] == max(1, (os.cpu_count() or 1) // 2)  # the cores shared, not one pool each
    assert payload["projection"]["hours_on_1"] > 0 and "git" in payload["code"]


def test_the_packing_benchmark_stops_when_a_process_dies_instead_of_waiting(packing, tmp_path):
    """A training process that cannot even start (here: it cannot import the benchmark, which is not on
    its path) is reported at once with its exit code, not after the ten-minute deadline."""
    argv = ["--device", "cpu", "--sizes", "32", "--presets", "paper", "--packing", "1", "--seconds", "1"]
    t0 = time.time()
    with pytest.raises(SystemExit, match=r"a training process exited with code 1 before reporting"):
        packing.main([*argv, "--batch-size", "2"])
    assert time.time() - t0 < 120


def _fake_mps_control(folder: Path, exit_code: int = 0) -> Path:
    """A stand-in for NVIDIA's nvidia-cuda-mps-control on the PATH: it logs its arguments, its pipe folder and
    what it reads on stdin (the "quit" command) to calls.log, and exits with ``exit_code``."""
    folder.mkdir()
    log = folder / "calls.log"
    script = folder / "nvidia-cuda-mps-control"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-d" ]; then echo "start $CUDA_MPS_PIPE_DIRECTORY" >> "{log}"; '
        f'echo "daemon refused: no GPU" >&2; exit {exit_code}; fi\n'
        f'read cmd; echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "{log}"\n'
    )
    script.chmod(0o755)
    return log


def test_mps_runs_the_block_as_clients_of_its_own_daemon_and_stops_it(packing, tmp_path, monkeypatch):
    log = _fake_mps_control(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(RuntimeError, match="a failing measurement"), packing.mps_daemon(True) as env:
        pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == pipe and Path(pipe).is_dir()  # what the clients inherit
        raise RuntimeError("a failing measurement")
    assert log.read_text().splitlines() == [f"start {pipe}", f"quit {pipe}"]  # stopped, also after a failure
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not Path(pipe).exists()
    with packing.mps_daemon(False) as env:  # without --mps: nothing started, nothing set
        assert env == {} and "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_mps_that_cannot_start_is_one_line(packing, tmp_path, monkeypatch):
    _fake_mps_control(tmp_path / "bin", exit_code=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(SystemExit, match=r"-d exited with code 3: daemon refused: no GPU; run without --mps$"):
        with packing.mps_daemon(True):
            pass
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(SystemExit, match=r"--mps needs NVIDIA's nvidia-cuda-mps-control on the PATH"):
        with packing.mps_daemon(True):
            pass


def test_mps_on_the_cpu_is_a_usage_error(packing, capsys):
    with pytest.raises(SystemExit):
        packing.main(["--device", "cpu", "--mps"])
    assert "--mps shares an NVIDIA GPU between processes; --device is cpu" in capsys.readouterr().err


def test_packing_threads_below_one_are_a_usage_error(packing, capsys):
    with pytest.raises(SystemExit):
        packing.main(["--device", "cpu", "--threads", "2", "0"])
    assert "--threads is the CPU threads per process, at least 1; got 0" in capsys.readouterr().err
    assert packing.threads_per_process(1) == (os.cpu_count() or 1) and packing.threads_per_process(10**6) == 1


def test_the_gpu_session_script_names_its_parts_and_projects_from_a_folder(tmp_path):
    """benchmarks/gpu_session.sh: a usage line without parts, one line for an unknown part, and `project`
    over the gpu-packing-*.json of a folder (here a committed H100 file) writes the projection."""
    script = ROOT / "benchmarks" / "gpu_session.sh"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    run = lambda *a: subprocess.run([str(script), *a], cwd=ROOT, env=env, capture_output=True, text=True)  # noqa: E731
    none, bogus, empty = run(), run("pack64"), run("project")
    assert none.returncode == 2 and "usage: benchmarks/gpu_session.sh PART..." in none.stderr
    assert bogus.returncode == 2 and "unknown part 'pack64'" in bogus.stderr
    assert empty.returncode == 1 and f"no gpu-packing-*.json in {tmp_path}" in empty.stderr
    (tmp_path / "gpu-packing-32-eager.json").write_text((ROOT / "benchmarks/results/h100-packing-32.json").read_text())
    done = run("project")
    assert done.returncode == 0, done.stderr
    projection = json.loads((tmp_path / "projection.json").read_text())["projection"]
    assert projection["hours_on_1"] > projection["hours_on_8"] > 0


@pytest.fixture(scope="module")
def stacked():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield _load("stacked_step")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop("stacked_step", None)


# vmap runs the SE blocks' adaptive average pooling as a loop over the models (no batching rule for
# aten::as_strided_ in torch 2.14): slower, not different; benchmarks/stacked_step.py says so
VMAP_FALLBACK = "ignore:There is a performance drop because we have not yet implemented the batching rule"


@pytest.mark.filterwarnings(VMAP_FALLBACK)
def test_a_stacked_step_gives_every_model_its_own_step(stacked, single_thread):
    """In float64 (where the order of sums does not show), two stacked steps of two models leave each model's
    weights and BatchNorm statistics where two steps of that model alone, with its own Adam, leave them."""
    import copy

    from piade_lib.engine import precision as prec
    from piade_lib.model.losses import PiadeLoss
    from piade_lib.model.network import build_model
    from piade_lib.presets import get_preset

    p = get_preset("paper")
    torch.manual_seed(0)
    models = [build_model("paper", image_size=32, n_vectors=2, pretrained=False).double() for _ in range(2)]
    alone = [copy.deepcopy(m) for m in models]
    loss_fn = PiadeLoss("paper").double()
    xs = torch.rand(2, 3, 3, 32, 32, dtype=torch.float64)
    step = stacked.StackedStep(
        models, copy.deepcopy(loss_fn), lr=p.lr, weight_decay=p.weight_decay, device="cpu", precision="fp32"
    )
    per_model = [step.step(xs) for _ in range(2)][-1]
    for k, model in enumerate(alone):
        prec.prepare_model(model.train(), "cpu", "fp32")
        optimizer = prec.optimizer(model.parameters(), p.lr, p.weight_decay, "cpu")
        for _ in range(2):
            loss = loss_fn.per_image(model(xs[k]).reconstruction, xs[k])["total"].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert float(per_model[k]) == pytest.approx(float(loss.detach()), rel=1e-12)
        state, mine = model.state_dict(), step.model_state(k)
        assert set(state) <= set(mine)
        for name, value in state.items():
            torch.testing.assert_close(mine[name], value, rtol=1e-9, atol=1e-10, msg=name)
    with pytest.raises(ValueError, match="StackedStep of 2 models got a stack of 3 batches"):
        step.step(torch.rand(3, 3, 3, 32, 32, dtype=torch.float64))


@pytest.mark.filterwarnings(VMAP_FALLBACK)
def test_the_packing_benchmark_trains_stacked_models_and_projects_them(packing, stacked, tmp_path):
    """--stack K: a process's epoch trains K models (K times the images), the projection shares each run's
    start-up among the K, and --stack 0 is a usage error."""
    epoch = packing._epoch_fn("paper", 32, 2, torch.device("cpu"), False, 2)
    assert epoch() == 2 * 2 * 8  # two models, 8 batches of 2
    row = {**_measurement("paper", 32, 2, 4000.0, 8.0), "stack": 4, "per_run_img_s": 500.0}
    cifar = packing.projection(pd.DataFrame([row])).iloc[0]
    per_run = 5000 * 400 + (5000 + 10000) / 3
    assert cifar["stack"] == 4
    assert cifar["device_hours"] == pytest.approx((10 * per_run / 4000 + 10 * 8.0 / 8) / 3600, abs=1e-3)
    assert cifar["run_hours"] == pytest.approx((per_run / 500 + 8.0) / 3600, abs=1e-3)
    with pytest.raises(SystemExit):
        packing.main(["--device", "cpu", "--stack", "0"])


@pytest.mark.filterwarnings(VMAP_FALLBACK)
def test_the_operator_count_of_a_step_counts_computing_operators_and_views_apart(tmp_path, single_thread):
    """count_step_ops.py: one Trainer step and one stacked step of 2 models, counted after a warm-up step;
    computing operators and views apart, the same count for any batch (a launch count does not grow with it)."""
    ops = _load("count_step_ops")
    out = tmp_path / "ops.json"
    try:
        assert ops.main(["--presets", "paper", "--sizes", "32", "--stack", "2", "--json", str(out)]) == 0
        payload = json.loads(out.read_text())
        trainer, stacked = payload["rows"]
        assert (trainer["kind"], trainer["models"], stacked["kind"], stacked["models"]) == ("trainer", 1, "stacked", 2)
        for row in (trainer, stacked):
            assert row["computing"] > 100 and row["views"] > 0 and row["total"] == row["computing"] + row["views"]
            names = dict(row["top"])
            assert "aten.convolution" in names or "aten.convolution_backward" in names or "aten.bmm" in names
        assert payload["args"]["json"] == "ops.json"
        bigger = ops.count_trainer_step("paper", 32, batch=4)
        assert bigger["computing"] == trainer["computing"]
        with pytest.raises(SystemExit):
            ops.main(["--batch-size", "1"])
    finally:
        sys.modules.pop("count_step_ops", None)
