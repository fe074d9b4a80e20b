"""Run folders a user (or a disk) has damaged, through the `piade` command: one line and the right exit status,
never a traceback; damaged final weights are set aside and rebuilt, not taken for a finished run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from piade_lib import cli

# a tiny run: one epoch of two batches of two images, no pretrained weights, on the CPU
OPTIONS = ["--epochs", "1", "--batch-size", "2", "--n-bootstrap", "10", "--device", "cpu", "--no-pretrained", "--quiet"]
TRAIN = ["train", "--dataset", "digits", "--class", "2", "--limit-train", "4", "--limit-test", "4", *OPTIONS]
RUN = Path("runs") / "digits-lsa" / "2" / "paper-v2"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    assert cli.main([*TRAIN, "--output", str(root)]) == 0
    return root


@pytest.fixture
def root(trained_root: Path, tmp_path: Path) -> Path:
    """A copy of the trained results root, safe to damage: its .pt files are hard links (a checkpoint is
    ~150 MB), so a test replaces one (:func:`_own`) before writing into it; the run's own writes are atomic
    (a new file renamed into place) and never write through a link."""

    def copy(src: str, dst: str) -> None:
        os.link(src, dst) if src.endswith(".pt") else shutil.copy2(src, dst)

    shutil.copytree(trained_root, tmp_path / "results", copy_function=copy)
    return tmp_path / "results"


def _own(path: Path) -> bytes:
    """Unlink ``path`` (a hard link into the shared trained run) and return its bytes, to write a new file."""
    data = path.read_bytes()
    path.unlink()
    return data


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"piade {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("content", ["[1, 2]", '"hello"', "{}"])
def test_a_config_json_that_is_not_a_runs_configuration_is_one_line(root: Path, content: str, capsys) -> None:
    run = root / RUN
    (run / "config.json").write_text(content)
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet"]) == 2
    line = _one_line_error(capsys, "evaluate")
    assert f"{run / 'config.json'} is not a run's configuration" in line
    assert ("has no kind, dataset" in line) if content == "{}" else ("holds a JSON" in line)
    image = root / "x.png"
    image.write_bytes(b"")
    assert cli.main(["score", str(run), str(image), "--output", str(root / "s.csv"), "--device", "cpu"]) == 2
    assert "is not a run's configuration" in _one_line_error(capsys, "score")


@pytest.mark.parametrize(
    "metrics", [[1], {"thresholds": "abc"}, {"thresholds": {"train": "abc"}}, {"thresholds": {"train": None}}]
)
def test_a_metrics_json_without_a_usable_threshold_is_one_line(root: Path, metrics, capsys) -> None:
    run = root / RUN
    (run / "metrics.json").write_text(json.dumps(metrics))
    image = root / "x.png"
    image.write_bytes(b"")
    out = root / "s.csv"
    assert cli.main(["score", str(run), str(image), "--output", str(out), "--device", "cpu"]) == 2
    line = _one_line_error(capsys, "score")
    assert str(run / "metrics.json") in line and "--threshold" in line
    assert not out.exists()


def test_damaged_final_weights_are_set_aside_and_rebuilt_not_taken_for_a_finished_run(root: Path, capsys) -> None:
    run = root / RUN
    final = run / "checkpoints" / "final.pt"
    whole = torch.load(final, weights_only=True)
    data = _own(final)
    final.write_bytes(data[: len(data) // 2])  # truncated
    capsys.readouterr()

    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet"]) == 1
    line = _one_line_error(capsys, "evaluate")
    assert f"cannot read checkpoint {final}" in line and "run `piade train`" in line

    assert cli.main([*TRAIN, "--output", str(root)]) == 0
    err = capsys.readouterr().err
    assert f"piade train: warning: {final} is damaged (not a complete checkpoint): kept as final.pt.damaged-" in err
    assert "UserWarning" not in err and "Traceback" not in err  # the library's warnings as one line each
    kept = list(final.parent.glob("final.pt.damaged-*"))
    assert len(kept) == 1 and kept[0].stat().st_size < final.stat().st_size
    rebuilt = torch.load(final, weights_only=True)
    assert rebuilt["epoch"] == whole["epoch"]
    for name, tensor in whole["model"].items():
        assert torch.equal(rebuilt["model"][name], tensor), name  # from the last epoch checkpoint, not retrained
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet"]) == 0


def test_overwrite_starts_afresh_when_no_checkpoint_is_usable(root: Path, capsys) -> None:
    run = root / RUN
    ckpt = run / "checkpoints"
    (ckpt / "final.pt").unlink()
    (run / "metrics.json").unlink()
    for path in ckpt.glob("*.pt"):
        _own(path)
        path.write_bytes(b"")  # every checkpoint damaged
    capsys.readouterr()

    assert cli.main([*TRAIN, "--output", str(root)]) == 1
    line = _one_line_error(capsys, "train")
    assert f"no usable checkpoint in {ckpt}" in line and "again with --overwrite" in line

    assert cli.main([*TRAIN, "--output", str(root), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"piade train: warning: no usable checkpoint: moved the run folder {run} aside" in err
    moved = list(run.parent.glob("paper-v2.old-*"))
    assert len(moved) == 1 and sorted(p.name for p in (moved[0] / "checkpoints").glob("*.pt"))  # kept, not deleted
    assert (ckpt / "final.pt").is_file() and (run / "metrics.json").is_file()


def test_a_relative_data_root_is_recorded_absolute_and_evaluate_takes_the_data_where_it_is_now(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Your own images (dataset folder) named by a relative --data-root: evaluate works from any folder, and
    after the images moved, `evaluate --data-root` finds them (checked against the manifest) and records it."""
    from data_fixtures import write_mvtec_category

    write_mvtec_category(tmp_path / "work" / "widget", masks=False, ext=".png", defects={"dent": 2})
    monkeypatch.chdir(tmp_path / "work")
    argv = [
        "train",
        "--dataset",
        "folder",
        "--class",
        "widget",
        "--data-root",
        "widget",
        "--image-size",
        "32",
        *OPTIONS,
    ]
    assert cli.main([*argv, "--output", str(tmp_path / "results")]) == 0
    run = next((tmp_path / "results" / "runs").glob("folder-*/widget/paper-v2"))
    config = json.loads((run / "config.json").read_text())
    assert config["data_root"] == str(tmp_path / "work" / "widget")

    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet"]) == 0
    (tmp_path / "work" / "widget").rename(tmp_path / "moved")
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet"]) == 2
    assert str(tmp_path / "work" / "widget") in _one_line_error(capsys, "evaluate")
    assert cli.main(["evaluate", str(run), "--device", "cpu", "--quiet", "--data-root", "moved"]) == 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["data_root"] == str(tmp_path / "moved")
    assert recorded["config_hash"] == config["config_hash"]  # the same run


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--protocol", "nope"], "unknown protocol 'nope' for 'digits'"),
        (["--param", "test_fraction=2"], "protocol parameter test_fraction=2 is not valid"),
        (["--param", "no_such=1"], "unknown parameter(s) ['no_such']"),
    ],
)
def test_a_run_refused_for_its_task_arguments_creates_nothing(tmp_path: Path, extra, message, capsys) -> None:
    """Checked before the run folder's lock is taken: no results root, no runs/<task>/<class>/ with a lock file."""
    assert cli.main([*TRAIN, *extra, "--output", str(tmp_path / "results")]) == 2
    assert message in _one_line_error(capsys, "train")
    assert not (tmp_path / "results").exists()


def test_a_run_folder_in_use_is_one_line_naming_the_holder(root: Path, monkeypatch, capsys) -> None:
    """Another process (here: this one, as ./run_all.sh's notebook kernel would) holds the run folder's lock."""
    from piade_lib.engine import folders

    monkeypatch.setenv("PIADE_RUN_ALL", "./run_all.sh quick (pid 4242)")
    with folders.locked(root / RUN):
        assert cli.main([*TRAIN, "--output", str(root)]) == 1
    line = _one_line_error(capsys, "train")
    assert f"{root / RUN} is in use by another process" in line and "./run_all.sh quick (pid 4242)" in line


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_run(root: Path, capsys) -> None:
    """atomic_write's temporaries that a SIGKILL left behind (a 77 MB one after a killed checkpoint write)."""
    run = root / RUN
    left = [run / "checkpoints" / ".epoch_0002.pt.l8ot8kcn.tmp", run / ".metrics.json.x1y2z3.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    kept = run / "checkpoints" / "notes.tmp"  # not a hidden temporary of ours
    kept.write_text("mine")
    assert cli.main([*TRAIN, "--output", str(root)]) == 0  # finished: skipped, but the folder is tidied
    assert not any(path.exists() for path in left) and kept.exists()
