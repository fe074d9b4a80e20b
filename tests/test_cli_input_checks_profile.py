"""Bad input to ``piade profile``, ``piade report`` and ``piade download``: exit 2 and one line naming the
file or key, the valid values and the fix; no traceback, nothing created or overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from piade_lib import cli
from piade_lib.data import torchvision_sets
from piade_lib.data.errors import DatasetDownloadError

DIGITS = {"dataset": "digits", "classes": ["0"]}


def _profile(tmp_path: Path, section: dict | None = None, **top) -> Path:
    path = tmp_path / "p.yaml"
    raw = {"name": "p", "defaults": {"pretrained": False}, "sections": {"table2": {**DIGITS, **(section or {})}}}
    path.write_text(yaml.safe_dump({**raw, **top}))
    return path


def _one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err and "[Errno" not in err and "atomically" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"piade {command}: error: "), err
    return lines[0]


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


# ------------------------------------------------------------------------------------------------ profile check
@pytest.mark.parametrize(
    "section, top, needles",
    [
        ({"device": "banana"}, {}, ["sections.table2", "device='banana' is not a device", "auto, cpu, cuda, cuda:N"]),
        ({"device": "cuda:99"}, {}, ["sections.table2", "device='cuda:99' is not available", "set device: auto"]),
        ({}, {"figure3": {"n_images": -1}}, ["figure3.n_images=-1 is not an integer >= 1"]),
        ({}, {"figure3": {"n_images": 0}}, ["figure3.n_images=0 is not an integer >= 1"]),
        ({"num_workers": -1}, {}, ["sections.table2", "num_workers=-1 is not an integer >= 0"]),
        (
            {"protocol_params": {"nonsense": 1}},
            {},
            ["sections.table2: protocol_params: unknown parameter(s) ['nonsense']", "holdout_fraction"],
        ),
        ({"image_size": 64}, {}, ["sections.table2: image_size=64 is not supported", "image_size=32"]),
        ({"seed": 2**32}, {}, ["sections.table2: seed=4294967296 is not an integer in [0, 4294967295]"]),
        ({"seeds": [0, 2**32]}, {}, ["sections.table2: seeds must be distinct integers in [0, 4294967295]"]),
        ({"seeds": [1, 1]}, {}, ["sections.table2: seeds must be distinct integers"]),
    ],
)
@pytest.mark.parametrize("command", ["check", "prepare"])
def test_profile_check_refuses_bad_values_with_one_line(tmp_path, capsys, command, section, top, needles):
    path = _profile(tmp_path, section, **top)
    assert cli.main(["profile", command, str(path)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, "profile")
    assert str(path) in line
    for needle in needles:
        assert needle in line, line
    assert captured.out == "" and "datasets and weights available" not in captured.err


@pytest.mark.parametrize("command", ["check", "prepare"])
def test_a_protocol_parameter_the_data_package_refuses_when_it_builds_is_bad_input_not_missing_data(
    tmp_path, capsys, command
):
    """Textures' counts are checked when the task is built (not when the profile loads): still exit 2, one line."""
    section = {"dataset": "textures", "protocol": "mvtec", "classes": ["brick"], "image_size": 32}
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "defaults": {"pretrained": False},
                "sections": {"table3": {**section, "protocol_params": {"n_train": -1}}},
            }
        )
    )
    assert cli.main(["profile", command, str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err, "profile")
    assert f"{path}: sections.table3" in line and "protocol parameter n_train=-1 is not valid" in line
    assert "missing" not in line


def test_profile_check_still_passes_a_valid_profile(tmp_path, capsys):
    path = _profile(tmp_path, {"device": "cpu", "image_size": 32, "protocol_params": {"holdout_fraction": 0.1}})
    assert cli.main(["profile", "check", str(path)]) == 0
    assert "datasets and weights available" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ profile params
def test_params_out_dir_is_created_with_its_parents(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert cli.main(["profile", "params", "smoke", "02_training", "--out-dir", str(out)]) == 0
    assert yaml.safe_load((out / "02_training.yaml").read_text())["profile"] == "smoke"
    assert [p.name for p in out.iterdir()] == ["02_training.yaml"]  # no temporary file left


@pytest.mark.parametrize("under", [False, True])
def test_params_out_dir_that_is_a_file_is_refused_naming_it(tmp_path, capsys, under):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    out = blocker / "sub" if under else blocker
    with pytest.raises(SystemExit) as exc:
        cli.main(["profile", "params", "smoke", "02_training", "--out-dir", str(out)])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err, "profile params")
    assert "--out-dir" in line and str(blocker) in line and "is a file" in line
    assert blocker.read_text() == "keep" and _files(tmp_path) == [blocker]


def test_params_with_an_unknown_notebook_writes_nothing(tmp_path, capsys):
    out = tmp_path / "params"
    assert cli.main(["profile", "params", "smoke", "02_training", "99_other", "--out-dir", str(out)]) == 2
    assert "known notebooks" in _one_error_line(capsys.readouterr().err, "profile")
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ report readme
def test_report_readme_refuses_a_missing_results_root_and_creates_nothing(tmp_path, capsys):
    root = tmp_path / "nowhere"
    assert cli.main(["report", "readme", "smoke", "--results-root", str(root)]) == 2
    line = _one_error_line(capsys.readouterr().err, "report")
    assert f"the results root {root} does not exist" in line and "./run_all.sh smoke" in line
    assert not root.exists()


def test_report_readme_refuses_a_results_root_without_run_folders(tmp_path, capsys):
    assert cli.main(["report", "readme", "smoke", "--results-root", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err, "report")
    assert "holds no run folders" in line and "./run_all.sh smoke" in line
    assert _files(tmp_path) == []


def test_report_readme_refuses_a_file_as_results_root(tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("keep")
    assert cli.main(["report", "readme", "smoke", "--results-root", str(f)]) == 2
    line = _one_error_line(capsys.readouterr().err, "report")
    assert str(f) in line and "is a file" in line
    assert f.read_text() == "keep" and _files(tmp_path) == [f]


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_report_readme_refuses_a_bad_wall_time(tmp_path, capsys, value):
    (tmp_path / "runs" / "digits-lsa" / "0" / "paper-v2").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "readme", "smoke", "--results-root", str(tmp_path), "--wall-time", value])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err, "report readme")
    assert f"argument --wall-time: expected a finite number >= 0 (seconds), got '{value}'" in line
    assert not (tmp_path / "README.md").exists()


def test_report_readme_writes_for_run_folders(tmp_path, capsys):
    (tmp_path / "runs" / "digits-lsa" / "0" / "paper-v2").mkdir(parents=True)
    assert cli.main(["report", "readme", "smoke", "--results-root", str(tmp_path), "--wall-time", "90"]) == 0
    assert "1.5 min (90 s)" in (tmp_path / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ download
@pytest.mark.parametrize("under", [False, True])
def test_download_root_that_is_a_file_is_refused_naming_it(tmp_path, capsys, under):
    blocker = tmp_path / "data"
    blocker.write_text("keep")
    root = blocker / "sub" if under else blocker
    assert cli.main(["download", "mnist", "--root", str(root)]) == 2
    line = _one_error_line(capsys.readouterr().err, "download")
    assert f"--root {root}" in line and "is a file" in line
    assert blocker.read_text() == "keep" and _files(tmp_path) == [blocker]


def test_a_failed_download_leaves_no_empty_folders_it_created(tmp_path, capsys, monkeypatch):
    def offline(remote, folder, **kwargs):
        exc = DatasetDownloadError(f"could not download {remote.filename}")
        exc.errors = [f"{remote.url}: URLError: offline"]
        raise exc

    monkeypatch.setattr(torchvision_sets, "fetch", offline)
    kept = tmp_path / "kept"
    kept.mkdir()
    for root in (tmp_path / "new" / "data", kept):
        assert cli.main(["download", "mnist", "--root", str(root)]) == 2
        assert "cannot download mnist" in _one_error_line(capsys.readouterr().err, "download")
    assert _files(tmp_path) == [kept], "only the folder that existed before is left"
