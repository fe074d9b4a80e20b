"""The `piade` command, in-process: train -> evaluate -> score on digits with tiny settings, --help, errors."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from piade_lib import cli

TRAIN = ["train", "--dataset", "digits", "--class", "2", "--epochs", "1", "--batch-size", "2", "--limit-train", "4",
         "--limit-test", "4", "--n-bootstrap", "10", "--device", "cpu", "--no-pretrained", "--quiet"]


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
    assert cli.main(["score", str(trained), str(folder), "--output", str(out), "--maps", str(maps),
                     "--device", "cpu"]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "mse", "perceptual", "ssim_loss", "total", "above_threshold"]
    assert len(frame) == 3 and frame["path"].str.endswith(".png").all()
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
