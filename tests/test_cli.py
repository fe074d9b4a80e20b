"""The `piade` command, in-process: train -> evaluate -> score on digits with tiny settings, --help, errors
(each bad command answers with one line and the right exit status, never a traceback unless --debug)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from piade_lib import cli

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--class",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--limit-train",
    "4",
    "--limit-test",
    "4",
    "--n-bootstrap",
    "10",
    "--device",
    "cpu",
    "--no-pretrained",
    "--quiet",
]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    assert cli.main([*TRAIN, "--output", str(root)]) == 0
    return root / "runs" / "digits-lsa" / "2" / "paper-v2"


def test_help_documents_every_option(capsys) -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text, f"{name} --help lacks {opt}"
            assert action.help, f"{name}: {action.dest} has no help text"


def test_train_writes_a_complete_run_and_rerun_returns_at_once(trained: Path, capsys) -> None:
    for f in ("config.json", "metrics.json", "scores.csv", "history.csv", "checkpoints/final.pt", "provenance.json"):
        assert (trained / f).is_file(), f
    config = json.loads((trained / "config.json").read_text())
    assert config["pretrained"] is False and config["epochs"] == 1 and config["normal_class"] == "2"
    mtime = (trained / "checkpoints" / "final.pt").stat().st_mtime_ns
    assert cli.main([*TRAIN, "--output", str(trained.parents[3])]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {trained}" in out and "AUROC:" in out
    assert (trained / "checkpoints" / "final.pt").stat().st_mtime_ns == mtime


def test_a_compile_mode_is_an_execution_setting_of_a_finished_run(trained: Path, capsys) -> None:
    """--compile MODE does not make another run: the finished run is returned at once (and on a CPU the
    step is not compiled at all)."""
    mtime = (trained / "checkpoints" / "final.pt").stat().st_mtime_ns
    assert cli.main([*TRAIN, "--output", str(trained.parents[3]), "--compile", "reduce-overhead"]) == 0
    assert f"run folder: {trained}" in capsys.readouterr().out
    assert (trained / "checkpoints" / "final.pt").stat().st_mtime_ns == mtime


def test_train_refuses_a_changed_config_with_a_clear_error(trained: Path, capsys) -> None:
    assert cli.main([*TRAIN, "--output", str(trained.parents[3]), "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 (in folder) vs 0.01 (requested)" in err and "--overwrite" in err


def test_evaluate_rewrites_metrics_with_new_bootstrap(trained: Path, capsys) -> None:
    assert cli.main(["evaluate", str(trained), "--n-bootstrap", "7", "--device", "cpu", "--quiet"]) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["n_bootstrap"] == 7
    assert "AUROC" in capsys.readouterr().out


def test_score_new_images_writes_csv_and_maps(trained: Path, tmp_path: Path, capsys) -> None:
    from piade_lib.engine import folders
    from piade_lib.engine.splits import task_from_config

    _, _, test = task_from_config(folders.load_config(trained))
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):  # 8x8 grey digits as the data package stores them, saved as PNG
        img = (test[i]["image"][0].numpy() * 255).astype("uint8")
        Image.fromarray(img).save(folder / ("sub" if i == 2 else "") / f"d{i}.png")
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    assert (
        cli.main(["score", str(trained), str(folder), "--output", str(out), "--maps", str(maps), "--device", "cpu"])
        == 0
    )
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "mse", "perceptual", "ssim_loss", "total", "above_threshold", "status"]
    assert len(frame) == 3 and frame["path"].str.endswith(".png").all() and (frame["status"] == "ok").all()
    threshold = json.loads((trained / "metrics.json").read_text())["thresholds"]["train"]
    assert (frame["above_threshold"] == (frame["total"] > threshold)).all()
    assert len(list(maps.glob("*.png"))) == 3
    # an existing output is not replaced without --force
    assert cli.main(["score", str(trained), str(folder), "--output", str(out), "--device", "cpu"]) == 2
    assert "--force" in capsys.readouterr().err


def test_missing_inputs_give_clear_errors(tmp_path: Path, capsys) -> None:
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and str(tmp_path) in err


def test_train_with_a_step_budget_and_milestones(tmp_path: Path, capsys) -> None:
    steps = [a if a != "--epochs" else "--steps" for a in TRAIN]
    steps[steps.index("--steps") + 1] = "3"
    assert cli.main([*steps, "--eval-steps", "1", "2", "--output", str(tmp_path)]) == 0
    run = tmp_path / "runs" / "digits-lsa" / "2" / "paper-v2"
    assert pd.read_csv(run / "convergence.csv")["step"].tolist() == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["steps"] == 3
    assert "vs train-mean image" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # a budget is either epochs or steps
        cli.main([*TRAIN, "--steps", "3", "--output", str(tmp_path)])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------------------
# bad commands: one line naming the problem and the valid values, exit 2 (bad input) or 1 (run time)
# ------------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
BASE = ["train", "--dataset", "digits", "--class", "2"]


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"piade {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*BASE, "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
        ([*BASE, "--epochs", "two"], "argument --epochs: expected an integer >= 1, got 'two'"),
        ([*BASE, "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (
            [*BASE, "--batch-size", "1"],
            ("argument --batch-size: expected an integer >= 2 (BatchNorm needs 2 images per training batch), got 1"),
        ),
        ([*BASE, "--n-bootstrap", "-1"], "argument --n-bootstrap: expected an integer >= 0 (0 = no interval), got -1"),
        ([*BASE, "--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        ([*BASE, "--lr", "0"], "argument --lr: expected a finite number in (0, 3.4e+37]"),
        ([*BASE, "--lr", "nan"], "argument --lr: expected a finite number in (0, 3.4e+37]"),
        (
            [*BASE, "--lr", "1e38"],
            "argument --lr: expected a finite number in (0, 3.4e+37] (above it Adam's first step",
        ),
        ([*BASE, "--weight-decay=-1e-4"], "argument --weight-decay: expected a finite number >= 0, got '-1e-4'"),
        ([*BASE, "--weight-decay", "inf"], "argument --weight-decay: expected a finite number >= 0, got 'inf'"),
        ([*BASE, "--checkpoint-every", "0"], "argument --checkpoint-every: expected an integer >= 1, got 0"),
        (
            [*BASE, "--keep-checkpoints", "-1"],
            ("argument --keep-checkpoints: expected an integer >= 0 (0 = keep all), got -1"),
        ),
        ([*BASE, "--limit-train", "1"], "argument --limit-train: expected an integer >= 2, got 1"),
        ([*BASE, "--limit-test", "0"], "argument --limit-test: expected an integer >= 1, got 0"),
        ([*BASE, "--eval-steps", "5", "0"], "argument --eval-steps: expected an integer >= 1, got 0"),
        ([*BASE, "--compile", "fast"], "argument --compile: invalid choice: 'fast' (choose from 'default', "),
        ([*BASE, "--device", "tpu"], "argument --device: 'tpu' is not a device; devices that exist here: auto, cpu"),
        (
            [*BASE, "--device", "cuda:99"],
            ("argument --device: 'cuda:99' is not available on this machine; devices that exist here: auto, cpu"),
        ),
        (["evaluate", "somewhere", "--n-bootstrap", "-5"], "argument --n-bootstrap: expected an integer >= 0"),
        (["evaluate", "somewhere", "--device", "gpu"], "argument --device: 'gpu' is not a device"),
        (["score", "run", "img.png", "--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
        (
            ["score", "run", "img.png", "--threshold", "inf"],
            "argument --threshold: expected a finite number, got 'inf'",
        ),
        (["score", "run", "img.png", "--device", "cuda:7"], "argument --device: 'cuda:7' is not available"),
    ],
)
def test_the_parser_refuses_values_out_of_range_naming_the_valid_range(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert message in line, line


def test_an_unavailable_cuda_device_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exc:
        cli.main([*TRAIN, "--device", "cuda", "--output", str(tmp_path / "out")])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "'cuda' is not available on this machine; devices that exist here: auto, cpu" in line
    assert not (tmp_path / "out").exists()


def test_output_paths_of_the_wrong_kind_are_refused_before_anything_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    from piade_lib.engine import lifecycle, scoring

    def never(*a, **k):
        raise AssertionError("nothing may be trained or scored")

    monkeypatch.setattr(lifecycle, "train_run", never)
    monkeypatch.setattr(scoring, "load_trained", never)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, message in [
        ([*TRAIN, "--output", str(a_file)], f"argument --output: '{a_file}' is a file, not a folder"),
        ([*TRAIN, "--output", str(a_file / "sub")], f"'{a_file / 'sub'}' cannot be created: '{a_file}' is a file"),
        (
            ["score", "run", "img.png", "--output", str(tmp_path)],
            f"argument --output: '{tmp_path}' is a folder; give the path of the CSV file to write",
        ),
        (["score", "run", "img.png", "--maps", str(a_file)], f"argument --maps: '{a_file}' is a file, not a folder"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        assert message in _one_error_line(capsys.readouterr().err, argv[0])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main([*TRAIN, "--output", str(ro / "results")])
        assert exc.value.code == 2
        assert "is not writable" in _one_error_line(capsys.readouterr().err, "train")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied", "/somewhere/runs"),
        OSError(errno.ENOSPC, "No space left on device"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "/somewhere/config.json"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/somewhere/file/runs"),
    ],
)
def test_os_errors_at_run_time_are_one_line_with_exit_1(error, tmp_path: Path, capsys, monkeypatch) -> None:
    from piade_lib.engine import lifecycle

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(lifecycle, "train_run", fail)
    assert cli.main([*TRAIN, "--output", str(tmp_path)]) == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert f"{type(error).__name__}: [Errno {error.errno}]" in line and "run the same command again" in line
    with pytest.raises(type(error)):  # --debug: the exception itself, with its traceback
        cli.main(["--debug", *TRAIN, "--output", str(tmp_path)])
    monkeypatch.setenv("PIADE_DEBUG", "1")
    with pytest.raises(type(error)):
        cli.main([*TRAIN, "--output", str(tmp_path)])


def test_a_full_disk_while_writing_the_scores_is_one_line_with_exit_1(
    trained: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from piade_lib.engine import files

    img = tmp_path / "one.png"
    Image.new("L", (8, 8), 128).save(img)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_csv", full)
    assert cli.main(["score", str(trained), str(img), "--output", str(tmp_path / "s.csv"), "--device", "cpu"]) == 1
    assert "OSError: [Errno 28] No space left on device" in _one_error_line(capsys.readouterr().err, "score")


def test_a_full_disk_while_training_is_one_line_naming_the_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    """torch.save reports a full disk as a RuntimeError of its zip writer; the command still says, in one
    line with exit 1, which file could not be written, that the disk is full and how much space is left."""
    from piade_lib.engine import files

    def full_disk(obj, f, *a, **k):
        f.write(b"PK")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(files.torch, "save", full_disk)
    assert cli.main([*TRAIN, "--output", str(tmp_path)]) == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "OSError: [Errno 28] No space left on device" in line and "free there" in line, line
    assert re.search(r"'[^']*/checkpoints/epoch_0001\.pt'", line) and "run the same command again" in line, line
    assert not (tmp_path / "runs" / "digits-lsa" / "2" / "paper-v2").exists()  # no progress: nothing left over


def _unfinished_copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "res" / "runs" / "digits-lsa" / "2" / "paper-v2"
    run.mkdir(parents=True)
    shutil.copy(trained / "config.json", run / "config.json")
    return run


def test_score_and_evaluate_on_an_unfinished_run_say_how_to_finish_it(trained: Path, tmp_path: Path, capsys) -> None:
    run = _unfinished_copy(trained, tmp_path)
    img = tmp_path / "one.png"
    Image.new("L", (8, 8), 128).save(img)
    for argv in (["score", str(run), str(img), "--output", str(tmp_path / "s.csv")], ["evaluate", str(run)]):
        assert cli.main(argv) == 2
        line = _one_error_line(capsys.readouterr().err, argv[0])
        text = line.split(": error: ", 1)[1]
        assert text.startswith(f"the run in {run} has not finished training") and "piade evaluate" not in text
        assert "piade train --dataset digits --class 2 --protocol lsa --preset paper --vectors 2 --epochs 1" in line
        assert f"--no-pretrained --output {tmp_path / 'res'}" in line
    assert not (tmp_path / "s.csv").exists()


def _images_with_a_bad_one(folder: Path) -> list[Path]:
    folder.mkdir()
    good = []
    for i in range(2):
        Image.new("L", (8, 8), 60 * (i + 1)).save(folder / f"a{i}.png")
        good.append(folder / f"a{i}.png")
    (folder / "b_broken.png").write_bytes(b"this is not a PNG")
    return good


def test_score_reports_unreadable_images_in_a_status_column_and_scores_the_others(
    trained: Path, tmp_path: Path, capsys
) -> None:
    _images_with_a_bad_one(tmp_path / "imgs")
    out = tmp_path / "scores.csv"
    assert (
        cli.main(
            [
                "score",
                str(trained),
                str(tmp_path / "imgs"),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--batch-size",
                "2",
                "--maps",
                str(tmp_path / "maps"),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    frame = pd.read_csv(out)
    assert frame["path"].map(lambda p: Path(p).name).tolist() == ["a0.png", "a1.png", "b_broken.png"]
    assert frame["status"].tolist()[:2] == ["ok", "ok"]
    assert frame["status"][2].startswith("unreadable: UnidentifiedImageError")
    terms = frame[["mse", "perceptual", "ssim_loss", "total"]]
    assert terms.iloc[:2].notna().all().all() and terms.iloc[2].isna().all()
    assert pd.isna(frame["above_threshold"][2])
    assert len(list((tmp_path / "maps").glob("*.png"))) == 2
    bad_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(bad_lines) == 1
    assert bad_lines[0].startswith(f"piade score: cannot read {tmp_path / 'imgs' / 'b_broken.png'}: ")
    assert "scored 2 of 3 image(s)" in captured.out and "1 could not be read" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_score_strict_stops_at_the_first_unreadable_image_and_writes_nothing(
    trained: Path, tmp_path: Path, capsys
) -> None:
    _images_with_a_bad_one(tmp_path / "imgs")
    out = tmp_path / "scores.csv"
    assert (
        cli.main(
            [
                "score",
                str(trained),
                str(tmp_path / "imgs"),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--strict",
                "--maps",
                str(tmp_path / "maps"),
            ]
        )
        == 2
    )
    line = _one_error_line(capsys.readouterr().err, "score")
    assert f"cannot read image {tmp_path / 'imgs' / 'b_broken.png'}" in line and "--strict: nothing was scored" in line
    assert not out.exists() and not (tmp_path / "maps").exists()


def test_a_diverging_training_is_one_line_with_exit_1_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """End to end, as a user runs it: the largest learning rate the parser accepts makes the loss NaN."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("PIADE_DEBUG", None)
    argv = [
        sys.executable,
        "-m",
        "piade_lib.cli",
        "train",
        "--dataset",
        "digits",
        "--class",
        "2",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--limit-train",
        "4",
        "--limit-test",
        "4",
        "--n-bootstrap",
        "0",
        "--device",
        "cpu",
        "--no-pretrained",
        "--quiet",
        "--image-size",
        "32",
        "--lr",
        "3e37",
        "--output",
        str(tmp_path / "out"),
    ]
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1, r.stderr
    line = _one_error_line(r.stderr, "train")
    assert "non-finite training loss" in line and "--lr" in line and r.stdout == ""
    from piade_lib.engine.trainer import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):  # --debug: the exception propagates, so Python prints its traceback
        cli.main(["--debug", *argv[3:-1], str(tmp_path / "out2")])


def test_a_bad_argument_as_a_subprocess_is_argparse_usage_and_one_error_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "piade_lib.cli", "score", "run", "x.png", "--output", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"piade score: error: argument --output: '{tmp_path}' is a folder; give the "
        f"path of the CSV file to write, e.g. '{tmp_path / 'scores.csv'}'"
    )
