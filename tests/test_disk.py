"""The pre-flight disk estimate (piade_lib/experiments/disk.py): sizes against real files, what counts as
needed, and the refusal before anything trains."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from piade_lib import cli
from piade_lib.engine import checkpoints, folders
from piade_lib.engine.config import spec_from_config
from piade_lib.experiments import disk, preflight
from piade_lib.experiments.plan import profile_runs
from piade_lib.experiments.profiles import load_profile


def test_sizes_from_the_meta_model_match_the_files_a_run_writes(tiny_run: Path) -> None:
    files = disk.run_files(spec_from_config(folders.load_config(tiny_run)))
    final = (tiny_run / "checkpoints" / checkpoints.FINAL).stat().st_size
    epoch = (tiny_run / "checkpoints" / checkpoints.epoch_file(2)).stat().st_size
    # the files add the history, the RNG states and the zip's headers and alignment: a fraction of a percent
    assert 0 <= final - files.final < 0.005 * final, (final, files.final)
    assert 0 <= epoch - files.checkpoint < 0.005 * epoch, (epoch, files.checkpoint)
    assert files.checkpoint > 2.9 * files.final  # the model and Adam's two moments
    assert files.checkpoints_at_once == 3  # keep_checkpoints 2, and the next one written before the oldest goes
    assert files.peak == 3 * files.checkpoint + files.final


def test_what_a_profile_needs_counts_its_unfinished_runs_only(tmp_path: Path) -> None:
    prof = load_profile("smoke")
    runs = profile_runs(prof, tmp_path, lambda p: p.kind == "piade")
    need = disk.profile_disk_need(prof, tmp_path)
    sizes = [disk.run_files(p.spec) for p in runs]
    assert need.n_runs == len(runs) > 1 and need.at_once == 1
    assert need.final == sum(f.final for f in sizes)
    assert need.in_flight == max(f.peak - f.final for f in sizes)  # one run trains at a time (local executor)
    assert need.folder == tmp_path  # the nearest folder that exists

    done = runs[0].run_dir  # a finished run needs nothing more
    (done / "checkpoints").mkdir(parents=True)
    (done / "checkpoints" / checkpoints.FINAL).write_bytes(b"x")
    (done / "metrics.json").write_text("{}")
    after = disk.profile_disk_need(prof, tmp_path)
    assert (after.n_runs, after.final) == (need.n_runs - 1, need.final - sizes[0].final)

    # a run with checkpoints on disk already needs only the rest of its peak
    biggest = max(range(1, len(runs)), key=lambda i: sizes[i].peak - sizes[i].final)
    ckpt = runs[biggest].run_dir / "checkpoints"
    ckpt.mkdir(parents=True)
    with open(ckpt / checkpoints.epoch_file(1), "wb") as f:
        f.truncate(sizes[biggest].checkpoint)  # sparse: its size without the blocks
    others = max(f.peak - f.final for i, f in enumerate(sizes) if i not in (0, biggest))
    resumed = disk.profile_disk_need(prof, tmp_path)
    assert resumed.in_flight == max(others, sizes[biggest].peak - sizes[biggest].final - sizes[biggest].checkpoint)


def test_under_ray_as_many_runs_as_this_machine_holds_train_at_once(tmp_path: Path, monkeypatch) -> None:
    prof = load_profile("smoke")
    monkeypatch.setenv("PIADE_EXECUTOR", "ray")
    monkeypatch.setattr(disk.os, "cpu_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    need = disk.profile_disk_need(prof, tmp_path)
    extra = sorted(
        disk.run_files(p.spec).checkpoints_at_once * disk.run_files(p.spec).checkpoint
        for p in profile_runs(prof, tmp_path, lambda p: p.kind == "piade")
    )
    assert need.at_once == 2 and need.in_flight == sum(extra[-2:])


def _disk_of(free: int):
    return lambda path: SimpleNamespace(total=10**12, used=10**12 - free, free=free)


def test_too_little_disk_is_refused_before_anything_trains(tmp_path: Path, monkeypatch, capsys) -> None:
    prof = load_profile("smoke")
    results = tmp_path / "results" / "smoke"
    need = disk.profile_disk_need(prof, results)
    monkeypatch.setattr(disk.shutil, "disk_usage", _disk_of(need.total - 1))
    problem = disk.disk_problem(prof, results)
    assert problem is not None
    for part in (
        f"its {need.n_runs} unfinished PIADE run(s) need about {disk.size_text(need.total)}",
        f"{disk.size_text(need.total - 1)} is free there ({tmp_path})",  # the nearest folder that exists
        "PIADE_RESULTS=/a/larger/disk ./run_all.sh smoke",
        "keep_checkpoints",
        "PIADE_DISK_CHECK=0",
    ):
        assert part in problem, (part, problem)
    assert not results.exists()

    monkeypatch.setenv("PIADE_RESULTS", str(results))  # how run_all.sh tells the check where results go
    assert preflight.check_profile("smoke") == [problem]
    assert cli.main(["profile", "prepare", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "not enough disk for the runs of profile 'smoke'" in err and "Nothing was trained" in err

    monkeypatch.setenv("PIADE_DISK_CHECK", "0")
    assert disk.disk_problem(prof, results) is None
    monkeypatch.delenv("PIADE_DISK_CHECK")
    monkeypatch.setattr(disk.shutil, "disk_usage", _disk_of(need.total))
    assert disk.disk_problem(prof, results) is None


@pytest.mark.parametrize("n", [999, 1_000_000, 2_500_000_000])
def test_sizes_read_as_disks_are_sold(n: int) -> None:
    assert disk.size_text(n) == {999: "0.0 MB", 1_000_000: "1.0 MB", 2_500_000_000: "2.5 GB"}[n]


def test_a_results_folder_that_cannot_be_written_is_refused_before_the_disk_is_measured(
    tmp_path: Path, monkeypatch
) -> None:
    prof = load_profile("smoke")
    (tmp_path / "a_file").write_text("")
    problem = disk.disk_problem(prof, tmp_path / "a_file" / "results")
    assert problem is not None and f"{tmp_path / 'a_file'} is a file" in problem and "PIADE_RESULTS=" in problem

    # a read-only disk (or a folder without write permission; root ignores permissions, so access() is asked)
    monkeypatch.setattr(disk.os, "access", lambda path, mode: Path(path) != tmp_path)
    monkeypatch.setenv("PIADE_DISK_CHECK", "0")  # the estimate skipped: not the folder's check
    problem = disk.disk_problem(prof, tmp_path / "results")
    assert problem is not None and f"{tmp_path} is not writable (a read-only disk" in problem
    assert "not enough disk" not in problem and "PIADE_RESULTS=" in problem


def test_the_paper_profiles_disk_figures_in_the_docs_are_todays_estimate(tmp_path: Path) -> None:
    need = disk.profile_disk_need(load_profile("paper"), tmp_path)
    final, in_flight = disk.size_text(need.final), disk.size_text(need.in_flight)
    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    assert f"the `paper` profile's {need.n_runs} runs: {final} in all" in readme
    assert f"(up to {in_flight})" in readme
    header = " ".join(line.lstrip("# ") for line in (root / "configs" / "paper.yaml").read_text().splitlines())
    assert f"the {need.n_runs} PIADE runs keep {final} of final weights" in header
    assert f"holds up to {in_flight} of checkpoints" in header


def test_the_check_says_what_the_runs_will_take_and_what_is_free(tmp_path: Path, monkeypatch, capsys) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("PIADE_RESULTS", str(results))
    monkeypatch.setattr(disk.shutil, "disk_usage", _disk_of(10**12))
    need = disk.profile_disk_need(load_profile("smoke"), results)
    assert cli.main(["profile", "check", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"its {need.n_runs} unfinished PIADE run(s) need about {disk.size_text(need.total)} of disk" in out
    assert "1,000.0 GB free there" in out
