"""Executors: the profile's ``executor`` key and ``PIADE_EXECUTOR``; the local and the Ray executor give
the same runs; a failing or killed run is reported with its folder while the others finish; a killed
run resumes from its checkpoint, bit for bit. The Ray tests share one real local Ray runtime (2 CPUs).
Tiny settings: digits, 16 train images, batch 8, 32x32, CPU, random initialisation."""

from __future__ import annotations

import _thread
import dataclasses
import errno
import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from piade_lib.engine import checkpoints, folders
from piade_lib.engine.lifecycle import train_run
from piade_lib.experiments import executors, plan, preflight, profiles, runner

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "pretrained": False,
    "device": "cpu",
    "seed": 0,
    "batch_size": 8,
    "limit_train": 16,
    "limit_test": 24,
    "n_bootstrap": 50,
}


def _profile(tmp_path: Path, sections: dict, **top) -> profiles.Profile:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "defaults": TINY, "sections": sections, **top}))
    return profiles.load_profile(path)


TWO_DIGITS = {"dataset": "digits", "protocol": "lsa", "classes": ["3", "8"], "steps": 2, "baselines": ["ocsvm"]}


# ---------------------------------------------------------------------------------------------
# choosing the executor
# ---------------------------------------------------------------------------------------------
def test_profile_executor_key_defaults_to_local_and_reaches_every_section(tmp_path) -> None:
    prof = _profile(tmp_path, {"t": TWO_DIGITS})
    assert prof.executor == profiles.ExecutorSettings() and prof.executor.kind == "local"
    prof = _profile(
        tmp_path,
        {"t": TWO_DIGITS},
        executor={"kind": "ray", "num_gpus_per_run": 0.5, "num_cpus_per_run": 2, "max_retries": 0},
    )
    assert prof.sections["t"].executor == prof.executor == profiles.ExecutorSettings("ray", 0.5, 2, 0)
    shipped = {name: profiles.load_profile(name) for name in profiles.available_profiles()}
    # quick (the default) and the test profile run locally; readings spreads its 51 runs over a local
    # Ray runtime. A shipped profile on Ray asks each task for as many CPUs as its runs pin threads,
    # so that Ray does not oversubscribe the machine and the float rounding stays the pinned one.
    assert shipped["quick"].executor.kind == "local" and shipped["smoke"].executor.kind == "local"
    assert shipped["readings"].executor.kind == "ray"
    for prof in shipped.values():
        if prof.executor.kind == "ray":
            assert {s.run.get("threads") for s in prof.sections.values()} == {prof.executor.num_cpus_per_run}


@pytest.mark.parametrize(
    "executor, message",
    [
        ({"kind": "slurm"}, r"executor.kind: unknown executor 'slurm'; valid: local, ray"),
        ({"kind": "ray", "gpus": 1}, r"executor: unknown key\(s\) \['gpus'\]; valid keys: \['kind', 'max_retries'"),
        ({"num_gpus_per_run": -1}, r"executor.num_gpus_per_run must be a number >= 0, got -1"),
        ({"num_gpus_per_run": 1.5}, r"a share of one GPU \(<= 1\) or a whole number of GPUs, got 1.5"),
        ({"num_cpus_per_run": 0}, r"executor.num_cpus_per_run must be a number > 0, got 0"),
        ({"num_cpus_per_run": "one"}, r"executor.num_cpus_per_run must be a number > 0, got 'one'"),
        ({"max_retries": 1.5}, r"executor.max_retries must be an integer >= 0"),
        ("ray", r"executor must be a mapping"),
    ],
)
def test_malformed_executor_key_is_refused_with_the_reason(tmp_path, executor, message) -> None:
    with pytest.raises(profiles.ProfileError, match=message):
        _profile(tmp_path, {"t": TWO_DIGITS}, executor=executor)


def test_environment_overrides_the_profile_and_an_explicit_choice_overrides_both(monkeypatch) -> None:
    ray_settings = profiles.ExecutorSettings("ray", num_gpus_per_run=0.5, num_cpus_per_run=2, max_retries=1)
    monkeypatch.delenv(executors.ENV_VAR, raising=False)
    assert isinstance(executors.make_executor(), executors.LocalExecutor)
    ex = executors.make_executor(None, ray_settings)
    assert isinstance(ex, executors.RayExecutor)
    assert (ex.num_gpus_per_run, ex.num_cpus_per_run, ex.max_retries) == (0.5, 2, 1)
    monkeypatch.setenv(executors.ENV_VAR, "local")
    assert isinstance(executors.make_executor(None, ray_settings), executors.LocalExecutor)
    monkeypatch.setenv(executors.ENV_VAR, "ray")
    ex = executors.make_executor(None, profiles.ExecutorSettings(num_gpus_per_run=0.25))
    assert isinstance(ex, executors.RayExecutor) and ex.num_gpus_per_run == 0.25
    assert isinstance(executors.make_executor("local", ray_settings), executors.LocalExecutor)
    mine = executors.LocalExecutor()
    assert executors.make_executor(mine, ray_settings) is mine
    monkeypatch.setenv(executors.ENV_VAR, "rayy")
    with pytest.raises(executors.ExecutorError, match=r"\$PIADE_EXECUTOR: unknown executor 'rayy'; valid: local, ray"):
        executors.make_executor()
    assert any("PIADE_EXECUTOR='rayy'" in p for p in preflight.check_profile("smoke"))  # before anything trains


# ---------------------------------------------------------------------------------------------
# a failing run: reported with its folder, the others finish (both executors)
# ---------------------------------------------------------------------------------------------
def _failing_plan(tmp_path: Path) -> list[plan.PlannedRun]:
    """An OC-SVM run that works, a PIADE run of MNIST (whose data root is empty) and a digits run of a
    class that does not exist."""
    prof = _profile(
        tmp_path,
        {
            "ok": {"dataset": "digits", "protocol": "lsa", "classes": ["3"], "presets": [], "baselines": ["ocsvm"]},
            "missing": {"dataset": "mnist", "classes": ["0"], "steps": 2},
        },
    )
    root = tmp_path / "res"
    ok = plan.planned_runs(prof.sections["ok"], root)
    mnist = plan.planned_runs(prof.sections["missing"], root)
    assert [p.kind for p in ok] == ["baseline"] and [p.kind for p in mnist] == ["piade"]
    spec = dataclasses.replace(mnist[0].spec, dataset="digits", normal_class="42")
    no_class = dataclasses.replace(mnist[0], spec=spec, run_dir=root / "runs" / "digits-lsa" / "42" / "paper-v2")
    return [mnist[0], *ok, no_class]


@pytest.mark.parametrize("kind", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_failing_run_is_reported_with_its_folder_and_the_others_finish(
    kind, tmp_path, monkeypatch, capsys, request
) -> None:
    if kind == "ray":
        request.getfixturevalue("ray_runtime")
    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("PIADE_DATA", str(empty))  # the Ray worker must see the same data root
    runs = _failing_plan(tmp_path)
    ex = executors.make_executor(kind)
    with pytest.raises(executors.RunsFailedError) as caught:
        ex.run(runs, tmp_path / "res", runner.execute_planned, bar=False)
    failures = caught.value.failures
    assert [f.run for f in failures] == [runs[0], runs[2]] and caught.value.n_runs == 3
    assert str(runs[0].run_dir) in str(caught.value) and str(runs[2].run_dir) in str(caught.value)
    assert str(empty) in failures[0].error  # the mnist run looked under $PIADE_DATA of this process
    assert "unknown class" in failures[1].error and "42" in failures[1].error
    assert (runs[1].run_dir / "metrics.json").is_file()  # the OC-SVM run between them finished
    out = capsys.readouterr().out
    assert "[missing 1/2] mnist/0 paper-v2: FAILED" in out and "[ok 1/1] digits/3 baseline-ocsvm:" in out
    assert "2 of 3 run(s) FAILED" in out and "The first failure in full" in out


def _three_ocsvm_runs(tmp_path: Path) -> list[plan.PlannedRun]:
    prof = _profile(tmp_path, {"t": {**TWO_DIGITS, "classes": ["3", "8", "5"], "presets": []}})
    return plan.planned_runs(prof.sections["t"], tmp_path / "res")


def _disk_full_on_class_3(p, results_root, *, progress, prune):
    """Class 3's run meets a full disk at once; the others take 30 s before they run (the Ray test cancels
    them long before)."""
    if p.normal_class == "3":
        raise OSError(errno.ENOSPC, "No space left on device", str(p.run_dir / "scores.csv"))
    if os.environ.get("PIADE_TEST_SLOW_OTHERS"):
        time.sleep(30)
    return runner.execute_planned(p, results_root, progress=progress, prune=prune)


@pytest.mark.parametrize("kind", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_full_disk_stops_the_runs_not_yet_started_and_says_so(kind, tmp_path, monkeypatch, capsys, request) -> None:
    """Every later run would fail on the same disk, and only after training to its first checkpoint: the
    executor starts none of them (Ray: cancels those going on) and names them as stopped."""
    if kind == "ray":
        request.getfixturevalue("ray_runtime")
        monkeypatch.setenv("PIADE_TEST_SLOW_OTHERS", "1")
    runs = _three_ocsvm_runs(tmp_path)
    t0 = time.time()
    with pytest.raises(executors.RunsFailedError) as caught:
        executors.make_executor(kind).run(runs, tmp_path / "res", _disk_full_on_class_3, bar=False)
    assert time.time() - t0 < 25  # the other runs did not go on
    (failure,) = caught.value.failures
    assert failure.run == runs[0] and failure.stops_the_rest and "No space left on device" in failure.error
    assert caught.value.stopped == runs[1:]
    assert not any((p.run_dir / "metrics.json").exists() for p in runs)
    assert "2 other run(s) stopped or not started after t digits/3 baseline-ocsvm met a disk" in str(caught.value)
    out = capsys.readouterr().out
    assert "[t 1/3] digits/3 baseline-ocsvm: FAILED: OSError: [Errno 28] No space left on device" in out
    assert "no further run is started: they would fail the same way" in out
    assert "1 of 3 run(s) FAILED; 2 other run(s) stopped or not started" in out


@pytest.mark.parametrize(
    "error, stops",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/r/x.pt"), True),
        (OSError(errno.EROFS, "Read-only file system", "/r/x.pt"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (PermissionError(errno.EACCES, "Permission denied", "/r/x.pt"), False),  # one folder's, not the disk's
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
        (ValueError("unknown class"), False),
    ],
)
def test_which_errors_stop_the_rest(error, stops) -> None:
    assert executors.stops_the_rest(error) is stops
    try:  # torch.save's way: a RuntimeError of its own, the OSError as its context
        try:
            raise error
        finally:
            raise RuntimeError("unexpected pos")
    except RuntimeError as wrapped:
        assert executors.stops_the_rest(wrapped) is stops


# ---------------------------------------------------------------------------------------------
# Ray: a real local runtime, shared by the tests below
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime with 2 CPUs; the executors find it running and leave it running."""
    import logging
    import sys

    ray = pytest.importorskip("ray")
    # the workers import piade_lib (this checkout: Ray puts the working directory on their path) but not
    # this test module: its functions travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_ray_workers_import_this_checkout(ray_runtime) -> None:
    import piade_lib

    @ray_runtime.remote(num_cpus=1)
    def where() -> str:
        import piade_lib as lib

        return lib.__file__

    assert ray_runtime.get(where.remote()) == piade_lib.__file__


def _killed_after_first_epoch(p, results_root, *, progress, prune):
    """A PIADE run whose worker dies after its first epoch's checkpoint (as a preempted node would);
    other runs execute normally."""
    if p.kind != "piade":
        return runner.execute_planned(p, results_root, progress=progress, prune=prune)
    train_run(p.spec, results_root, progress=False, stop_after=1)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_run_is_reported_and_resumes_from_its_checkpoint(ray_runtime, tmp_path, capsys) -> None:
    prof = _profile(tmp_path, {"t": {**TWO_DIGITS, "classes": ["3"], "steps": None, "epochs": 3}})
    section = prof.sections["t"]
    root = tmp_path / "ray"
    piade, ocsvm = plan.planned_runs(section, root)
    ex = executors.RayExecutor(max_retries=0)
    with pytest.raises(executors.RunsFailedError) as caught:
        ex.run([piade, ocsvm], root, _killed_after_first_epoch, bar=False)
    (failure,) = caught.value.failures
    assert failure.run == piade and "died" in failure.error.lower()
    assert (ocsvm.run_dir / "metrics.json").is_file()  # the other run finished
    ckpt = piade.run_dir / "checkpoints"
    assert checkpoints.load_torch(ckpt / "last.pt")["epoch"] == 1 and not (ckpt / "final.pt").exists()
    assert "FAILED" in capsys.readouterr().out

    # submitted again: the run resumes from epoch 1, and ends where an uninterrupted run ends
    assert ex.run([piade, ocsvm], root, runner.execute_planned, bar=False) == [piade.run_dir, ocsvm.run_dir]
    prov = json.loads((piade.run_dir / "provenance.json").read_text())
    assert [s["resumed_from_epoch"] for s in prov["sessions"]] == [0, 1]
    straight = runner.run_section(section, tmp_path / "local", executor="local", baselines=False, bar=False)[0]
    wa = checkpoints.load_torch(piade.run_dir / "checkpoints" / "final.pt")["model"]
    wb = checkpoints.load_torch(straight / "checkpoints" / "final.pt")["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (piade.run_dir, straight))
    assert ma["auc"] == mb["auc"] and ma["term_auc"] == mb["term_auc"]


def _killed_on_first_attempt(p, results_root, *, progress, prune):
    """The worker dies after the first epoch's checkpoint on the first attempt only (a marker file
    beside the results root remembers it); Ray's retry then runs the run normally."""
    marker = Path(results_root).parent / "attempted"
    if marker.exists():
        return runner.execute_planned(p, results_root, progress=progress, prune=prune)
    marker.touch()
    train_run(p.spec, results_root, progress=False, stop_after=1)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_ray_retries_a_run_whose_worker_died_and_the_retry_resumes(ray_runtime, tmp_path) -> None:
    prof = _profile(tmp_path, {"t": {**TWO_DIGITS, "classes": ["3"], "steps": None, "epochs": 2, "baselines": []}})
    root = tmp_path / "ray"
    (piade,) = plan.planned_runs(prof.sections["t"], root)
    assert executors.RayExecutor(max_retries=1).run([piade], root, _killed_on_first_attempt, bar=False) == [
        piade.run_dir
    ]
    prov = json.loads((piade.run_dir / "provenance.json").read_text())
    assert [s["resumed_from_epoch"] for s in prov["sessions"]] == [0, 1]
    assert (piade.run_dir / "checkpoints" / "final.pt").is_file() and (piade.run_dir / "metrics.json").is_file()


def _one_more_epoch(p, results_root, *, progress, prune):
    """Resume a run and train one epoch past its last checkpoint."""
    last = checkpoints.load_torch(p.run_dir / "checkpoints" / "last.pt")["epoch"]
    return train_run(p.spec, results_root, progress=False, stop_after=last + 1)


def _interrupt_once_exists(path: Path, limit: float = 120.0) -> threading.Thread:
    """Interrupt this process's main thread, as Ctrl-C would, as soon as ``path`` exists."""

    def watch() -> None:
        end = time.monotonic() + limit
        while not path.exists() and time.monotonic() < end:
            time.sleep(0.05)
        _thread.interrupt_main()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks_releases_the_run_folders_and_the_runs_resume(ray_runtime, tmp_path) -> None:
    """Ctrl-C in the process that submitted the runs, while a run trains in a Ray worker: the executor
    cancels the tasks (Ray raises KeyboardInterrupt in the worker), the worker's run records the stop and
    lets go of its folder, and the same command resumes the run from its last checkpoint."""
    prof = _profile(
        tmp_path,
        {"t": {**TWO_DIGITS, "classes": ["3"], "steps": None, "epochs": 400, "checkpoint_every": 1, "baselines": []}},
    )
    root = tmp_path / "ray"
    (piade,) = plan.planned_runs(prof.sections["t"], root)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive Python
    try:
        _interrupt_once_exists(piade.run_dir / "checkpoints" / "last.pt")
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            executors.RayExecutor(max_retries=0).run([piade], root, runner.execute_planned, bar=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - t0 < 110  # interrupted, not trained to the end (400 epochs)

    # the cancelled task stops: its run records the stop and lets go of its folder's lock
    from filelock import FileLock

    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        sessions = json.loads((piade.run_dir / "provenance.json").read_text())["sessions"]
        status = sessions[-1]["status"]
        if status != "running":
            break
        time.sleep(0.2)
    assert status == "stopped: KeyboardInterrupt"
    FileLock(str(folders.lock_path(piade.run_dir))).acquire(timeout=30).lock.release()
    stopped_at = checkpoints.load_torch(piade.run_dir / "checkpoints" / "last.pt")["epoch"]
    assert 1 <= stopped_at < 400 and not (piade.run_dir / "metrics.json").exists()

    # submitted again: the run resumes from that checkpoint (and trains one more epoch, then stops)
    assert executors.RayExecutor(max_retries=0).run([piade], root, _one_more_epoch, bar=False, verbose=False) == [
        piade.run_dir
    ]
    sessions = json.loads((piade.run_dir / "provenance.json").read_text())["sessions"]
    assert [s["resumed_from_epoch"] for s in sessions] == [0, stopped_at]
    assert checkpoints.load_torch(piade.run_dir / "checkpoints" / "last.pt")["epoch"] == stopped_at + 1


def _quick_shrunk(tmp_path: Path) -> profiles.Profile:
    """configs/quick.yaml, every section, class, preset, vector count and baseline as shipped, with budgets
    cut to seconds: 2 optimiser steps, 16 train and 24 test images, one CAE epoch, 50 bootstrap draws."""
    raw = yaml.safe_load(profiles.profile_path("quick").read_text())
    raw["name"] = "quick-shrunk"
    raw["defaults"].update({"steps": 2, "limit_train": 16, "limit_test": 24, "n_bootstrap": 50, "device": "cpu"})
    for s in raw["sections"].values():
        s.update({"steps": 2, "limit_test": 24})
        s.pop("eval_steps", None)
        if "protocol_params" in s:
            s["protocol_params"].update({"n_train": 16, "n_test_good": 6, "n_test_defect": 6})
        for params in s.get("baseline_params", {}).values():
            params["epochs"] = 1
    path = tmp_path / "quick-shrunk.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return profiles.load_profile(path)


@pytest.mark.slow
def test_the_quick_profile_under_ray_gives_the_local_runs_and_tables(
    ray_runtime, tmp_path, monkeypatch, capsys
) -> None:
    """Every section of quick (Tables 2-4, Figure 4: PIADE, flips and all four baselines) run by the local
    and by the Ray executor (into a relative results root: the workers still write here); each run's
    metrics and the tables the notebooks write are equal, number for number. Run again, every run is
    skipped without a Ray task."""
    from piade_lib.reporting.tables import figure4_table, section_table

    prof = _quick_shrunk(tmp_path)
    assert list(prof.sections) == list(profiles.load_profile("quick").sections)
    names = list(prof.sections)
    monkeypatch.chdir(tmp_path)
    local = runner.run_sections(prof, names, "local", verbose=False, executor="local")
    capsys.readouterr()
    remote = runner.run_sections(prof, names, "ray", executor=executors.RayExecutor())
    out = capsys.readouterr().out
    assert "executor: ray" in out and "[ray] the runtime this process joined before" in out
    kinds = {p.kind for s in prof.sections.values() for p in plan.planned_runs(s, "ray")}
    assert kinds == {"piade", "baseline"} and sum(len(v) for v in remote.values()) >= 20
    for name, section in prof.sections.items():
        assert [d.relative_to("local") for d in local[name]] == [d.relative_to("ray") for d in remote[name]]
        for a, b in zip(local[name], remote[name]):
            ma, mb = (json.loads((Path(d) / "metrics.json").read_text()) for d in (a, b))
            keys = ("auc", "auc_ci_low", "auc_ci_high", "term_auc", "normal_recon_mse")
            assert {k: ma.get(k) for k in keys} == {k: mb.get(k) for k in keys}, a
        # quick pins threads: 2, so both executors compute with 2 CPU threads (this test process runs with 1,
        # a Ray task would with 1 by default); with different counts the full profile's tables differ
        for d in local[name] + remote[name]:
            threads = json.loads((Path(d) / "provenance.json").read_text())["device_name"]
            assert "2 torch threads" in threads, (d, threads)
        make = figure4_table if name == "figure4" else section_table
        a, b = make(section, "local"), make(section, "ray")
        assert not a.empty and a.notna().any().any(), name
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    # run again: every run is skipped, without a Ray task
    assert runner.run_sections(prof, names, "ray", executor="ray") == remote
    out = capsys.readouterr().out
    distinct = {d for v in remote.values() for d in v}  # figure4's two-vector model is table3's
    assert out.count("skipped (finished before)") == len(distinct) and "[ray]" not in out


def test_a_run_pinned_to_more_threads_asks_ray_for_as_many_cpus(tmp_path) -> None:
    prof = _profile(tmp_path, {"t": {**TWO_DIGITS, "threads": 2}})
    pinned = plan.planned_runs(prof.sections["t"], tmp_path)
    assert {p.spec.threads for p in pinned} == {2} and {p.kind for p in pinned} == {"piade", "baseline"}
    assert {executors.RayExecutor(num_cpus_per_run=1).cpus_for(p) for p in pinned} == {2.0}
    assert {executors.RayExecutor(num_cpus_per_run=4).cpus_for(p) for p in pinned} == {4.0}
    free = plan.planned_runs(_profile(tmp_path, {"t": TWO_DIGITS}).sections["t"], tmp_path)
    assert {p.spec.threads for p in free} == {None}
    assert {executors.RayExecutor(num_cpus_per_run=1).cpus_for(p) for p in free} == {1.0}


def test_a_run_pinned_to_more_threads_than_any_node_has_is_refused_before_anything_starts(
    ray_runtime, tmp_path, monkeypatch
) -> None:
    prof = _profile(tmp_path, {"t": {**TWO_DIGITS, "threads": 3}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"pins threads=3, more CPUs than any node of the Ray cluster has \(2\)"):
        runner.run_section(prof.sections["t"], "ray", executor=executors.RayExecutor(), bar=False)
    assert not list(Path("ray").glob("runs/*/*/*/metrics.json"))
