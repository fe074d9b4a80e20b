"""Bad input that reaches the data package: protocol parameters, seeds, a missing dataset and a damaged
image of the user's own folder each give one error line (exit 2) naming the argument, the valid values
and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import write_mvtec_category

from piade_lib import cli
from piade_lib.data import one_class_task, validate_split

BASE = [
    "train",
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--limit-train",
    "8",
    "--limit-test",
    "8",
    "--n-bootstrap",
    "0",
    "--no-pretrained",
    "--image-size",
    "32",
    "--device",
    "cpu",
    "--quiet",
]
DIGITS = [*BASE, "--dataset", "digits", "--class", "0"]

pytestmark = pytest.mark.usefixtures("single_thread")


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert lines[0].startswith("piade train: error: "), err
    return lines[0]


@pytest.mark.parametrize("param", ["test_fraction=NaN", "test_fraction=Infinity", "jitter=NaN", "n_train=-Infinity"])
def test_a_non_finite_parameter_is_refused_when_the_command_is_parsed(param: str, tmp_path: Path, capsys) -> None:
    """JSON reads NaN and Infinity (and the run folder would record them as null: jitter=NaN was random crops)."""
    with pytest.raises(SystemExit) as exc:  # argparse's own refusal: usage, then one error line
        cli.main([*DIGITS, "--param", param, "--output", str(tmp_path)])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"piade train: error: argument --param: {param}: expected a finite number", line
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["null", "abc", "true", "0", "1"])
def test_a_bad_fraction_names_the_parameter_the_value_and_the_range(value: str, tmp_path: Path, capsys) -> None:
    argv = [*DIGITS, "--param", f"test_fraction={value}", "--output", str(tmp_path)]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "test_fraction=" in line and "a finite number in (0, 1)" in line, line
    assert "--param test_fraction=0.5" in line, line
    assert not list(tmp_path.rglob("config.json"))  # refused before anything of the run was written


@pytest.mark.parametrize(
    "dataset, params, message",
    [
        ("digits", {"holdout_fraction": float("nan")}, "holdout_fraction=nan is not valid: give a finite number in [0"),
        ("digits", {"holdout_fraction": None}, "holdout_fraction=None"),
        ("digits", {"holdout_fraction": "0.1"}, "holdout_fraction='0.1' is not valid"),
        ("textures", {"n_train": 4.5}, "n_train=4.5 is not valid: give an integer in [1, 20000]"),
        ("textures", {"n_train": 10**7}, "n_train=10000000 is not valid: give an integer in [1, 20000] (crops"),
        ("textures", {"n_test_good": -1}, "n_test_good=-1 is not valid: give an integer in [0, 20000]"),
        ("textures", {"n_test_defect": "3"}, "n_test_defect='3' is not valid"),
        ("textures", {"crop_size": 64.0}, "crop_size=64.0 is not valid: give an integer in [16, 256]"),
        ("textures", {"jitter": "5"}, "jitter='5' is not valid: give an integer in [0, 64]"),
        ("textures", {"defect_types": "blotch"}, "defect_types='blotch' is not valid: give a list of one or more"),
        ("mvtec", {"download": "no"}, "download='no' is not valid: give True or False"),
        ("mnist", {"verify_checksums": "no"}, "--param verify_checksums=false"),
        ("folder", {"authors_subset": 1}, "authors_subset=1 is not valid"),
    ],
)
def test_protocol_parameters_of_the_wrong_type_or_range_are_refused(dataset, params, message, tmp_path) -> None:
    # a string "no" would have counted as True, 4.5 images been truncated to 4, "3" been accepted
    with pytest.raises(ValueError) as e:
        one_class_task(dataset, 0, root=tmp_path, **params)
    assert message in str(e.value) and "(piade: --param " in str(e.value), str(e.value)


@pytest.mark.parametrize("seed", ["4294967296", "99999999999999999999"])
def test_a_seed_above_32_bits_is_refused_by_the_parser(seed: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*DIGITS, "--seed", seed, "--output", str(tmp_path)])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"argument --seed: expected an integer in [0, 4294967295], got {seed}" in line, line


def test_the_data_package_refuses_a_seed_above_32_bits_naming_the_range() -> None:
    with pytest.raises(ValueError, match=r"seed=4294967296 is not valid: give an integer in \[0, 4294967295\]"):
        one_class_task("digits", 0, seed=2**32)


def test_a_missing_dataset_names_the_cli_flag_as_well_as_the_python_argument(tmp_path: Path, capsys) -> None:
    argv = [*BASE, "--dataset", "mvtec", "--class", "bottle", "--data-root", str(tmp_path / "empty")]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "root= argument (piade: --data-root)" in line and "PIADE_DATA" in line, line
    assert "--param download=true" in line, line
    with pytest.raises(FileNotFoundError, match="--data-root"):
        one_class_task("folder", None)


def test_a_damaged_image_of_a_users_own_folder_is_to_be_replaced_or_removed(tmp_path: Path, capsys) -> None:
    cat = tmp_path / "widget"
    write_mvtec_category(cat)
    bad = cat / "train" / "good" / "001.png"
    bad.write_bytes(b"not a png")
    argv = [*BASE, "--dataset", "folder", "--class", "widget", "--data-root", str(cat)]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "your own images" in line and "replace" in line and "remove it" in line, line
    assert "re-download" not in line and "re-extract" not in line, line
    assert bad.read_bytes() == b"not a png"  # the user's file is left as it was


def test_a_damaged_image_of_a_published_dataset_keeps_the_re_extract_advice(tmp_path: Path) -> None:
    write_mvtec_category(tmp_path / "bottle")
    (tmp_path / "bottle" / "train" / "good" / "000.png").write_bytes(b"not a png")
    task = one_class_task("mvtec", "bottle", root=tmp_path, image_size=32)
    with pytest.raises(ValueError, match="re-extract or re-download the dataset"):
        validate_split(task.train, "train")
