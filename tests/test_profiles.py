"""Profiles (configs/*.yaml): validation, notebook parameters, the availability check."""

from __future__ import annotations

import pytest
import yaml

from piade_lib import cli, paper_results
from piade_lib.experiments import preflight, profiles


def _write(tmp_path, raw: dict):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_config_loads_and_names_itself():
    names = profiles.available_profiles()
    assert {"quick", "paper", "smoke"} <= set(names)
    for name in names:
        prof = profiles.load_profile(name)
        assert prof.name == name and prof.results_root == f"results/{name}"
        assert prof.sections


def test_paper_profile_is_the_papers_experiments():
    prof = profiles.load_profile("paper")
    s = prof.sections
    assert (s["table2"].dataset, s["table3"].dataset, s["table4"].dataset) == ("cifar10", "mvtec", "coil100")
    assert len(s["table3"].class_names()) == 15 and len(s["table4"].class_names()) == 100
    assert len(s["table2"].class_names()) == 10
    assert set(s["figure4"].class_names()) == set(paper_results.FIGURE4_CATEGORIES)
    assert s["figure4"].n_vectors == [1, 2] and s["figure4"].is_ablation
    assert all(sec.run["pretrained"] is True and sec.run["epochs"] == 400 for sec in s.values())
    assert {"paper", "authors_code"} <= set(s["table2"].presets) and s["table2"].baselines
    assert {"mnist", "fashion_mnist"} <= set(s) and not any(sec.is_standin for sec in s.values())


def test_quick_profile_uses_offline_standins_without_weights():
    prof = profiles.load_profile("quick")
    s = prof.sections
    assert (s["table2"].dataset, s["table2"].protocol) == ("digits", "lsa")
    assert (s["table4"].dataset, s["table4"].protocol) == ("digits", "gpnd")
    assert s["table3"].dataset == s["figure4"].dataset == "textures"
    assert all(sec.is_standin for sec in s.values())
    assert not prof.pretrained
    # budgets in optimiser steps; both presets, every digit and several seeds run in the mnist profile
    assert all(sec.run.get("steps") for sec in s.values())


def test_mnist_profile_runs_every_digit_with_both_presets_and_three_seeds():
    s = profiles.load_profile("mnist").sections["mnist"]
    assert s.dataset == "mnist" and s.classes == "all" and len(s.class_names()) == 10
    assert s.presets == ["paper", "authors_code"] and len(s.seed_list()) >= 3
    assert s.paper_table == "mnist" and not s.is_standin and set(s.baselines) >= {"ocsvm", "kde"}
    readings = profiles.load_profile("readings").sections["readings"]
    assert readings.is_readings and len(readings.seed_list()) >= 3


def test_authors_readings_flips_the_released_codes_readings_back_and_its_unflipped_runs_are_the_mnist_ones():
    from piade_lib.engine import folders
    from piade_lib.experiments import plan
    from piade_lib.presets import PRESETS, READINGS, RUN_LEVEL_FIELDS

    s = profiles.load_profile("authors_readings").sections["readings"]
    assert s.is_readings and s.presets == ["authors_code"] and s.classes == ["2", "9"]
    assert s.seed_list() == [0, 1, 2, 3, 4, 5]
    runs = plan.planned_runs(s, "a")
    flipped = [p for p in runs if p.flip]
    assert {p.flip for p in flipped} == set(s.flips) and len(flipped) == len(s.flips) * 12
    for p in flipped:  # each flip takes the paper preset's value (a run-level field: the run's own)
        for field in READINGS[p.flip]:
            got = getattr(p.spec if field in RUN_LEVEL_FIELDS else p.spec.preset_obj(), field)
            assert got == getattr(PRESETS["paper"], field) != getattr(PRESETS["authors_code"], field), p.flip
    # the runs as they are: the mnist profile's authors_code runs of the same digits and seeds, config for config
    mnist = {
        (p.normal_class, p.seed): p
        for p in plan.planned_runs(profiles.load_profile("mnist").sections["mnist"], "m")
        if p.kind == "piade" and p.preset == "authors_code"
    }
    as_is = [p for p in runs if not p.flip]
    assert len(as_is) == 12
    for p in (p for p in as_is if p.seed in {0, 1, 2}):  # the mnist profile's seeds
        twin = mnist[(p.normal_class, p.seed)]
        assert folders.config_hash(p.spec.to_dict()) == folders.config_hash(twin.spec.to_dict())
        assert p.spec.threads == twin.spec.threads == 2  # float rounding depends on the count
        assert p.run_dir.relative_to("a") == twin.run_dir.relative_to("m")


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(profiles.UnknownProfile) as exc:
        profiles.load_profile("no_such_profile")
    for name in ("quick", "paper", "smoke"):
        assert name in str(exc.value)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"dataset": "digits", "epoch": 3}, r"unknown key\(s\) \['epoch'\]"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"dataset": "digits", "presets": ["papr"]}, "unknown preset 'papr'"),
        ({"dataset": "digits", "baselines": ["svm"]}, "unknown baseline 'svm'.*ocsvm"),
        (
            {"dataset": "digits", "baselines": ["kde"], "baseline_params": {"kde": {"density": "fast"}}},
            r"sections.table2: baseline_params.kde.density must be one of \['exact', 'tree'\], got 'fast'",
        ),
        ({"dataset": "digits", "classes": ["11"]}, r"unknown class\(es\) \['11'\]"),
        ({"dataset": "digits", "protocol": "mvtec"}, "unknown protocol 'mvtec'"),
        ({"classes": ["0"]}, "'dataset' is required"),
        (
            {"dataset": "digits", "preset_overrides": {"se_reductoin": 4}},
            r"unknown preset field\(s\) \['se_reductoin'\]",
        ),
        ({"dataset": "digits", "checkpoint_every": 0}, "checkpoint_every must be >= 1"),
        (
            {"dataset": "digits", "preset_overrides": {"decode_vector": "longst"}},
            (
                r"sections.table2: preset_overrides: decode_vector='longst' is not one of "
                r"first_train_longest_eval, longest, first \(preset paper\)"
            ),
        ),
        (
            {"dataset": "digits", "flips": ["decode_vector"], "preset_overrides": {"lambda_ssim": -1.0}},
            r"preset_overrides: lambda_ssim=-1.0 is not a finite number >= 0",
        ),
        (
            {"dataset": "digits", "presets": ["authors_code"], "preset_overrides": {"pyramid_channels": [64, 64]}},
            r"preset_overrides: pyramid_channels=\[64, 64\] must have one entry per pyramid scale",
        ),
        ({"dataset": "digits", "preset_overrides": {"pyramid_mode": "global"}}, "pyramid_mode was removed"),
        ({"dataset": "digits", "preset_overrides": ["init"]}, "preset_overrides must be a mapping"),
        ({"dataset": "digits", "lr": -1.0}, r"sections.table2: lr=-1.0 is not a finite number in \(0, 3.4e\+37\]"),
        ({"dataset": "digits", "batch_size": 1}, r"batch_size=1 is not an integer >= 2"),
        ({"dataset": "digits", "limit_train": 1}, r"limit_train=1 is not an integer >= 2"),
    ],
)
def test_malformed_profiles_are_refused_with_the_reason(tmp_path, section, message):
    with pytest.raises(profiles.ProfileError, match=message):
        profiles.load_profile(_write(tmp_path, {"sections": {"table2": section}}))


def test_shared_run_folders_must_share_settings(tmp_path):
    raw = {
        "sections": {
            "table3": {"dataset": "textures", "classes": ["brick"], "epochs": 3},
            "figure4": {"dataset": "textures", "classes": ["brick"], "n_vectors": [1, 2], "epochs": 5},
        }
    }
    with pytest.raises(profiles.ProfileError, match="same run folder"):
        profiles.load_profile(_write(tmp_path, raw))
    raw["sections"]["figure4"]["epochs"] = 3
    assert profiles.load_profile(_write(tmp_path, raw)).ablation_sections() == ["figure4"]


def test_notebook_parameters_come_from_the_profile():
    prof = profiles.load_profile("quick")
    p = {nb: profiles.notebook_parameters(prof, nb) for nb in profiles.NOTEBOOKS}
    assert all(v["profile"] == "quick" and v["results_root"] == "results/quick" for v in p.values())
    assert p["02_training"]["sections"] == p["03_evaluation"]["sections"] == ["table2", "table3", "table4"]
    assert p["04_ablation"]["sections"] == ["figure4"]
    assert p["05_paper_figures"]["figure3_images"] == prof.figure3["n_images"]
    assert profiles.notebook_parameters(prof, "notebooks/02_training.ipynb", "elsewhere")["results_root"] == "elsewhere"
    with pytest.raises(profiles.ProfileError, match="known notebooks"):
        profiles.notebook_parameters(prof, "99_other")


def test_params_command_prints_and_writes_papermill_yaml(tmp_path, capsys):
    assert cli.main(["profile", "params", "smoke", "notebooks/04_ablation.ipynb", "--results-root", "somewhere"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {
        "profile": "smoke",
        "results_root": "somewhere",
        "sections": ["figure4"],
    }
    assert cli.main(["profile", "params", "smoke", *profiles.NOTEBOOKS, "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.yaml")) == list(profiles.NOTEBOOKS)
    assert yaml.safe_load((tmp_path / "02_training.yaml").read_text())["sections"] == ["table2", "table3", "table4"]


def test_command_line_exit_codes(capsys):
    assert cli.main(["profile", "prepare", "smoke"]) == 0
    assert capsys.readouterr().out.strip() == "results/smoke"
    assert cli.main(["profile", "check", "no_such_profile"]) == 2
    assert "valid profiles" in capsys.readouterr().err


def test_check_passes_for_offline_data_and_names_missing_data(tmp_path, monkeypatch):
    assert preflight.check_profile("smoke") == []
    monkeypatch.setenv("PIADE_DATA", str(tmp_path / "empty"))
    prof = profiles.load_profile(
        _write(
            tmp_path,
            {
                "sections": {
                    "table3": {"dataset": "mvtec", "classes": ["bottle", "wood"]},
                    "table4": {"dataset": "coil100", "classes": ["obj1"]},
                }
            },
        )
    )
    problems = preflight.check_profile(prof)
    assert len(problems) == 2
    mvtec, coil = problems
    assert "DatasetNotFoundError" in mvtec and "bottle" in mvtec and "1 more class(es): wood" in mvtec
    assert "mvtec_anomaly_detection.tar.xz" in mvtec and "PIADE_DATA" in mvtec and str(tmp_path / "empty") in mvtec
    assert "coil-100.zip" in coil and "sha256" in coil
