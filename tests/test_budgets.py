"""Step budgets, convergence milestones, seeds, the mean-image check and the readings' flips.
Tiny settings: digits, 6 train images, batch 2 (3 batches per epoch), 32x32, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from piade_lib.engine import checkpoints, folders
from piade_lib.engine.config import RunConfig
from piade_lib.engine.lifecycle import train_run
from piade_lib.engine.scoring import mean_image
from piade_lib.engine.splits import task_from_config
from piade_lib.engine.trainer import budget
from piade_lib.experiments import plan, profiles, runner
from piade_lib.metrics import RECON_KEYS
from piade_lib.presets import AUTHORS_CODE, PAPER, READINGS, reading_values
from piade_lib.reporting import tables

TINY = dict(
    dataset="digits",
    normal_class="2",
    steps=5,
    batch_size=2,
    limit_train=6,
    limit_test=12,
    n_bootstrap=20,
    device="cpu",
    pretrained=False,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory) -> Path:
    """5 optimiser steps (3 batches per epoch: the budget ends inside epoch 2), milestones at 2 and 4."""
    return train_run(RunConfig(**TINY, eval_steps=[2, 4]), tmp_path_factory.mktemp("budget"), progress=False)


def test_budget_turns_steps_into_epochs() -> None:
    r = RunConfig(**TINY).resolved()
    assert r.epochs is None and r.steps == 5
    assert budget(r.epochs, r.steps, 3) == (2, 5)
    assert budget(r.epochs, r.steps, 5) == (1, 5)
    r3 = RunConfig(**{**TINY, "steps": None, "epochs": 3}).resolved()
    assert budget(r3.epochs, r3.steps, 4) == (3, 12)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        RunConfig(**{**TINY, "steps": 0}).resolved()
    with pytest.raises(ValueError, match="eval_steps"):
        RunConfig(**TINY, eval_steps=[0]).resolved()


def test_step_budget_trains_exactly_that_many_steps(budget_run: Path) -> None:
    history = pd.read_csv(budget_run / "history.csv")
    assert history["step"].tolist() == [3, 5] and history["epoch"].tolist() == [1, 2]
    final = checkpoints.load_torch(budget_run / "checkpoints" / "final.pt")
    assert final["step"] == 5 and final["epoch"] == 2
    assert json.loads((budget_run / "provenance.json").read_text())["steps"] == 5


def test_convergence_rows_end_with_the_final_metrics(budget_run: Path) -> None:
    conv = pd.read_csv(budget_run / "convergence.csv")
    metrics = json.loads((budget_run / "metrics.json").read_text())
    assert conv["step"].tolist() == [2, 4, 5]
    assert conv["auc"].iloc[-1] == pytest.approx(metrics["auc"])
    assert conv["normal_recon_mse"].iloc[-1] == pytest.approx(metrics["normal_recon_mse"])
    assert conv["auc"].between(0, 1).all() and (conv["normal_recon_mse"] > 0).all()


def test_milestones_do_not_change_training(budget_run: Path, tmp_path: Path) -> None:
    plain = train_run(RunConfig(**TINY), tmp_path, progress=False)
    a = checkpoints.load_torch(plain / "checkpoints" / "final.pt")["model"]
    b = checkpoints.load_torch(budget_run / "checkpoints" / "final.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (plain / "convergence.csv").exists()


def test_step_budget_resumes_exactly(budget_run: Path, tmp_path: Path) -> None:
    cfg = RunConfig(**TINY, eval_steps=[2, 4])
    train_run(cfg, tmp_path, progress=False, stop_after=1)
    assert not (cfg.run_dir(tmp_path) / "checkpoints" / "final.pt").exists()
    resumed = train_run(cfg, tmp_path, progress=False)
    a = checkpoints.load_torch(resumed / "checkpoints" / "final.pt")["model"]
    b = checkpoints.load_torch(budget_run / "checkpoints" / "final.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pd.testing.assert_frame_equal(
        pd.read_csv(resumed / "convergence.csv").drop(columns="train_seconds"),
        pd.read_csv(budget_run / "convergence.csv").drop(columns="train_seconds"),
    )


def test_metrics_compare_reconstructions_with_the_train_mean_image(budget_run: Path) -> None:
    metrics = json.loads((budget_run / "metrics.json").read_text())
    assert set(RECON_KEYS) <= set(metrics)
    scores = pd.read_csv(budget_run / "scores.csv", dtype={"id": str})
    _, train, test = task_from_config(folders.load_config(budget_run))
    mean = mean_image(train)
    normal = [test[i]["image"] for i in range(len(test)) if test[i]["label"] == 0]
    expected = float(np.mean([((x - mean) ** 2).mean().item() for x in normal]))
    assert metrics["normal_mean_image_mse"] == pytest.approx(expected, rel=1e-5)
    assert metrics["normal_recon_mse"] == pytest.approx(scores.loc[scores["label"] == 0, "mse"].mean())
    assert metrics["recon_to_mean_image"] == pytest.approx(metrics["normal_recon_mse"] / expected)


def test_readings_cover_every_difference_between_the_presets() -> None:
    differing = {f for f in PAPER.__dataclass_fields__ if getattr(PAPER, f) != getattr(AUTHORS_CODE, f)}
    flipped = {f for fields in READINGS.values() for f in fields}
    assert differing - {"name"} == flipped
    assert reading_values("output_activation") == {"output_activation": "tanh"}
    assert reading_values("output_activation", "authors_code") == {"output_activation": "tanh01"}
    with pytest.raises(KeyError, match="valid readings"):
        reading_values("outpt_activation")


def _profile(tmp_path: Path, section: dict) -> profiles.Profile:
    raw = {
        "name": "t",
        "defaults": {"device": "cpu", "steps": 3, "batch_size": 2, "limit_train": 4},
        "sections": {"s": {"dataset": "digits", "classes": ["1"], **section}},
    }
    path = tmp_path / "t.yaml"
    path.write_text(__import__("yaml").safe_dump(raw))
    return profiles.load_profile(path)


def test_sections_expand_seeds_and_flips(tmp_path: Path) -> None:
    from piade_lib.experiments.plan import planned_runs

    s = _profile(tmp_path, {"seeds": [0, 3], "flips": ["weight_decay", "init"], "baselines": ["kde"]}).sections["s"]
    plan = planned_runs(s, tmp_path)
    assert [p.variant for p in plan] == [
        "paper-v2",
        "paper-v2+weight_decay",
        "paper-v2+init",
        "paper-v2-s3",
        "paper-v2+weight_decay-s3",
        "paper-v2+init-s3",
        "baseline-kde",
        "baseline-kde-s3",
    ]
    wd = next(p for p in plan if p.flip == "weight_decay" and p.seed == 3)
    assert wd.spec.weight_decay == AUTHORS_CODE.weight_decay and wd.spec.seed == 3
    init = next(p for p in plan if p.flip == "init" and p.seed == 0)
    assert init.spec.preset_overrides == {"init": "default"}
    assert init.spec.preset_obj().init == "default"
    assert s.is_readings and profiles.load_profile(s_path := tmp_path / "t.yaml").readings_sections() == ["s"]
    assert s_path.is_file()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"flips": ["outpt_activation"]}, "unknown reading"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"seeds": [-1]}, "seeds must be distinct integers in \\[0, 4294967295\\]"),
        ({"paper_table": "table9"}, "paper_table must be one of"),
    ],
)
def test_bad_seeds_and_flips_are_refused(tmp_path: Path, section: dict, message: str) -> None:
    with pytest.raises(profiles.ProfileError, match=message):
        _profile(tmp_path, section)


def test_tables_average_over_seeds(tmp_path: Path) -> None:

    prof = _profile(tmp_path, {"seeds": [0, 1], "baselines": ["kde"], "limit_test": 12, "steps": 2, "n_bootstrap": 30})
    s = prof.sections["s"]
    runner.run_section(s, tmp_path / "res", verbose=False)
    table = tables.section_table(s, tmp_path / "res")
    aucs = [
        json.loads((p.run_dir / "metrics.json").read_text())["auc"]
        for p in plan.planned_runs(s, tmp_path / "res")
        if p.kind == "piade"
    ]
    row = table.iloc[0]
    assert row["ours_auc"] == pytest.approx(np.mean(aucs))
    assert row["ours_seed_sd"] == pytest.approx(np.std(aucs, ddof=1))
    assert row["ours_ci_low"] <= row["ours_auc"] <= row["ours_ci_high"]
    kde = [
        json.loads((p.run_dir / "metrics.json").read_text())["auc"]
        for p in plan.planned_runs(s, tmp_path / "res")
        if p.kind == "baseline"
    ]
    assert row["kde_auc"] == pytest.approx(np.mean(kde)) and len(kde) == 2
    assert table.iloc[-1]["class"] == "mean" and "ours_seed_sd" in table.columns
