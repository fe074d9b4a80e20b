"""The paper's numbers (transcription checks) and the tables built from run folders.

Run folders are written here with known scores (no training), so the tables' values, mean rows,
intervals and paper columns can be checked exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from piade_lib import metrics, paper_results
from piade_lib.engine import files, scoring
from piade_lib.experiments import plan, profiles
from piade_lib.reporting import readme, results, tables


# ---------------------------------------------------------------------------------------------
# paper_results: transcription
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", [paper_results.table2, paper_results.table3])
def test_reported_means_match_the_per_class_values(table):
    """Recompute each column's "Mean" row from the per-class rows (the paper rounds to 3 decimals)."""
    df = table()
    recomputed = df.drop(index="mean").mean()
    diff = (recomputed - df.loc["mean"]).abs()
    assert diff.max() <= 0.002, f"transcription error? column(s) off: {diff[diff > 0.002].to_dict()}"


def test_table_shapes_and_known_cells():
    t2, t3 = paper_results.table2(), paper_results.table3()
    assert list(t2.index) == [str(i) for i in range(10)] + ["mean"]
    assert list(t2.columns) == ["OC SVM", "KDE", "DAE", "VAE", "Pix CNN", "GAN", "LSA", "Ours"]
    assert t2.loc["4", "Ours"] == 0.805 and t2.loc["mean", "LSA"] == 0.641
    assert len(t3) == 16 and set(t3.index) - {"mean"} == set(paper_results.FIGURE4_CATEGORIES) | {
        "grid",
        "tile",
        "cable",
        "metal_nut",
        "pill",
        "screw",
        "toothbrush",
        "transistor",
        "zipper",
    }
    assert t3.loc["wood", "Ours"] == 0.978 and t3.loc["mean", "Ours"] == 0.762
    assert paper_results.table4().loc["Ours", "auc"] == 0.998
    assert paper_results.TABLE4_MEAN == {"GPND": 0.979, "OCGAN": 0.995, "DCAE": 0.908, "Ours": 0.998}


def test_figure4_has_the_claim_but_no_invented_values():
    assert paper_results.FIGURE4_VALUES_AVAILABLE is False
    assert paper_results.FIGURE4_MEAN_IMPROVEMENT == 0.09
    assert set(paper_results.FIGURE4_CATEGORIES) == {"bottle", "capsule", "hazelnut", "carpet", "leather", "wood"}
    assert "9%" in paper_results.FIGURE4_CLAIM
    assert paper_results.paper_ours_auc("figure4", "bottle") is None


def test_paper_lookup_by_class_name_and_sources():
    assert paper_results.paper_ours_auc("table2", "airplane") == 0.751  # CIFAR-10 class 0
    assert paper_results.paper_ours_auc("table2", "9") == 0.532
    assert paper_results.paper_ours_auc("table4", "obj1") is None
    assert paper_results.paper_ours_auc("table4", "mean") == 0.998
    assert "no image-level AUROC" in paper_results.TABLE3_SOURCE
    cols = paper_results.paper_baseline_columns("table3").columns
    assert list(cols) == ["paper_ae_ssim_auc", "paper_ae_l2_auc", "paper_anogan_auc", "paper_cnn_feat_dict_auc"]


# ---------------------------------------------------------------------------------------------
# tables from run folders
# ---------------------------------------------------------------------------------------------
def _section(tmp_path, sections: dict) -> profiles.Profile:
    path = tmp_path / "fake.yaml"
    path.write_text(
        yaml.safe_dump({"name": "fake", "defaults": {"n_bootstrap": 50, "epochs": 1}, "sections": sections})
    )
    return profiles.load_profile(path)


def _write_run(run_dir, n_normal: int, n_anomalous: int, shift: float, seed: int) -> None:
    """A finished run whose anomalous scores are shifted by ``shift`` (larger = higher AUC)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)]
    scores = rng.normal(size=labels.size) + shift * labels
    frame = pd.DataFrame({"id": [f"img{i:03d}" for i in range(labels.size)], "label": labels, "total": scores})
    run_dir.mkdir(parents=True, exist_ok=True)
    scoring.write_results(run_dir, frame, metrics.compute_metrics(frame, n_bootstrap=50, terms=("total",)))


def _fake_runs(section, root, shift_by_variant: dict[str, float]) -> None:
    for i, p in enumerate(plan.planned_runs(section, root)):
        _write_run(p.run_dir, 30, 60, shift_by_variant.get(p.variant, 1.0), seed=i)


def test_section_table_on_the_papers_dataset(tmp_path):
    classes = list(paper_results.CIFAR10_CLASS_NAMES[:4])
    prof = _section(
        tmp_path,
        {
            "table2": {
                "dataset": "cifar10",
                "protocol": "lsa",
                "classes": classes,
                "presets": ["paper", "authors_code"],
                "baselines": ["ocsvm", "kde"],
            }
        },
    )
    s = prof.sections["table2"]
    _fake_runs(s, tmp_path, {"paper-v2": 1.5, "authors_code-v2": 0.5})
    t = tables.section_table(s, tmp_path)
    assert list(t.columns[:6]) == list(results.TABLE_COLUMNS)
    assert list(t["class"]) == classes + ["mean"]
    for col in ("authors_code_auc", "authors_code_ci_low", "ocsvm_auc", "kde_auc", "paper_lsa_auc"):
        assert col in t.columns
    # the values are the runs' metrics.json values
    p0 = next(p for p in plan.planned_runs(s, tmp_path) if p.variant == "paper-v2")
    assert t.loc[0, "ours_auc"] == pytest.approx(files.read_json(p0.run_dir / "metrics.json")["auc"])
    assert (t["ours_auc"].iloc[:-1] > t["authors_code_auc"].iloc[:-1]).all()  # larger shift, higher AUC
    # paper columns: per class and the printed mean
    assert list(t["paper_auc"]) == [0.751, 0.550, 0.708, 0.609, 0.675]  # rows "0".."3", then the printed mean
    assert t["paper_lsa_auc"].iloc[-1] == 0.641
    mean = t.iloc[-1]
    assert mean["ours_auc"] == pytest.approx(t["ours_auc"].iloc[:-1].mean())
    assert mean["ours_ci_low"] < mean["ours_auc"] < mean["ours_ci_high"]
    # the mean's interval is narrower than a single class's
    assert (mean["ours_ci_high"] - mean["ours_ci_low"]) < (t["ours_ci_high"] - t["ours_ci_low"]).iloc[:-1].min()
    tables.write_table(t, tmp_path / "tables" / "table2.csv")
    back = tables.read_table(tmp_path / "tables" / "table2.csv")
    tables.validate_table(back)


def test_standin_leaves_paper_auc_empty_and_table4_only_has_a_mean(tmp_path):
    prof = _section(
        tmp_path,
        {
            "table2": {"dataset": "digits", "protocol": "lsa", "classes": ["0", "1", "2"], "baselines": ["ocsvm"]},
            "table4": {"dataset": "coil100", "protocol": "gpnd", "classes": ["obj1", "obj2"]},
        },
    )
    for s in prof.sections.values():
        _fake_runs(s, tmp_path, {})
    t2 = tables.section_table(prof.sections["table2"], tmp_path)
    assert prof.sections["table2"].is_standin
    assert t2["paper_auc"].isna().all() and not any(c.startswith("paper_lsa") for c in t2.columns)
    assert "stand-in" in tables.comparison_statement(prof.sections["table2"], t2)
    t4 = tables.section_table(prof.sections["table4"], tmp_path)
    assert t4["paper_auc"].iloc[:-1].isna().all() and t4["paper_auc"].iloc[-1] == 0.998
    assert t4["paper_ocgan_auc"].iloc[-1] == 0.995


def test_missing_runs_are_named(tmp_path):
    prof = _section(tmp_path, {"table2": {"dataset": "digits", "classes": ["0", "1"]}})
    s = prof.sections["table2"]
    _write_run(plan.planned_runs(s, tmp_path)[0].run_dir, 5, 5, 1.0, 0)
    with pytest.raises(results.MissingRunsError, match=r"(?s)1 run\(s\).*digits-lsa/1/paper-v2.*02_training"):
        tables.section_table(s, tmp_path)


def _valid_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ["d", "d", "d"],
            "class": ["a", "b", "mean"],
            "ours_auc": [0.8, 0.6, 0.7],
            "ours_ci_low": [0.7, 0.5, 0.62],
            "ours_ci_high": [0.9, 0.7, 0.78],
            "paper_auc": [None, None, None],
            "ocsvm_auc": [0.5, 0.5, 0.5],
        }
    )


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda t: t.drop(columns="paper_auc"), "lacks column"),
        (lambda t: t.iloc[:-1], "final 'mean' row"),
        (lambda t: t.assign(ocsvm_auc=[0.5, 1.5, 1.0]), "outside"),
        (lambda t: t.assign(ours_ci_low=[0.85, 0.5, 0.62]), "outside \\[ours_ci_low"),
        (lambda t: t.assign(ours_auc=[0.8, 0.6, 0.9]), "not the mean"),
        (lambda t: t[["class", "dataset", "ours_auc", "ours_ci_low", "ours_ci_high", "paper_auc"]], "first columns"),
    ],
)
def test_validate_table_rejects_broken_tables(breakage, message):
    tables.validate_table(_valid_table())
    with pytest.raises(tables.TableSchemaError, match=message):
        tables.validate_table(breakage(_valid_table()))


def test_figure4_table_pairs_the_two_variants(tmp_path):
    prof = _section(tmp_path, {"figure4": {"dataset": "textures", "classes": ["brick", "grass"], "n_vectors": [1, 2]}})
    s = prof.sections["figure4"]
    _fake_runs(s, tmp_path, {"paper-v1": 0.3, "paper-v2": 2.0})
    f = tables.figure4_table(s, tmp_path)
    assert list(f.columns) == list(tables.FIGURE4_COLUMNS)
    assert list(f["category"]) == ["brick", "grass", "mean"]
    body = f.iloc[:-1]
    assert np.allclose(body["diff"], body["auc_2vec"] - body["auc_1vec"])
    assert (body["diff"] > 0).all() and f["diff_ci_low"].iloc[-1] > 0  # a clear improvement
    assert f[["paper_auc_1vec", "paper_auc_2vec"]].isna().all().all()
    assert "interval excludes zero" in tables.figure4_statement(f)
    with pytest.raises(tables.TableSchemaError, match="diff"):
        tables.validate_figure4(f.assign(diff=0.0))


def test_bootstrap_interval_of_a_mean_contains_it():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    s = np.c_[rng.normal(size=80) + y, rng.normal(size=80) + 0.2 * y]
    boots = metrics.bootstrap_aucs(y, s, 300, seed=1)
    assert boots.shape == (300, 2) and (boots[:, 0] > boots[:, 1]).mean() > 0.9


def test_run_facts_ignore_runs_moved_aside_by_overwrite(tmp_path):
    current = tmp_path / "runs" / "cifar10-lsa" / "airplane" / "paper-v2"
    files.write_json(current / "provenance.json", {"pretrained": True, "device_name": "gpu", "wall_seconds": 10})
    old = current.with_name("paper-v2.old-20240101-000000")
    files.write_json(old / "provenance.json", {"pretrained": False, "device_name": "cpu", "wall_seconds": 99})
    facts = readme._run_facts(tmp_path)
    assert facts == {
        "n_runs": 1,
        "devices": ["gpu"],
        "pretrained": [True],
        "run_seconds": 10.0,
        "locks": [(None, None, None)],
    }  # no lock recorded: runs from before the lock file
