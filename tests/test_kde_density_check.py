"""scripts/kde_density_check.py: a profile's KDE runs scored with the exact density and with
scikit-learn's tree, side by side, from the runs' own splits; run folders are left as they are."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from piade_lib.experiments import profiles, runner

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_thread")


def _script():
    spec = importlib.util.spec_from_file_location("kde_density_check", ROOT / "scripts" / "kde_density_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_the_script_rebuilds_each_kde_run_and_compares_both_densities(tmp_path, capsys) -> None:
    path = tmp_path / "tiny-kde.yaml"
    defaults = {"pretrained": False, "device": "cpu", "steps": 1, "batch_size": 8, "limit_train": 30}
    defaults.update({"limit_test": 40, "n_bootstrap": 20, "threads": 1})
    section = {"dataset": "digits", "protocol": "lsa", "classes": ["3"], "presets": [], "baselines": ["kde"]}
    path.write_text(yaml.safe_dump({"name": "tiny-kde", "defaults": defaults, "sections": {"s": section}}))
    results = tmp_path / "results"
    script = _script()
    assert script.main([str(path), "--results-root", str(results)]) == 2
    assert "1 KDE runs of profile tiny-kde have no run folder" in capsys.readouterr().err

    runner.run_sections(profiles.load_profile(path), ["s"], results, verbose=False, executor="local")
    runs = results / "runs"
    before = _digests(runs)
    assert script.main([str(path), "--results-root", str(results)]) == 0
    out = capsys.readouterr().out
    assert _digests(runs) == before  # nothing in a run folder changed
    frame = pd.read_csv(results / "diagnostics" / "kde_density.csv")
    assert len(frame) == 1 and frame.loc[0, "density_of_folder"] == "exact"
    # the run's own splits and features, rebuilt: the exact AUROC is the folder's
    assert frame.loc[0, "auc_exact"] == pytest.approx(frame.loc[0, "auc_of_folder"], abs=1e-12)
    assert frame.loc[0, "max_abs_logp_move_exact"] < 1e-6 and frame.loc[0, "fit_seconds_exact"] > 0
    assert 0.0 <= frame.loc[0, "share_test_off_by_1e-6"] <= 1.0
    assert (results / "diagnostics" / "kde_density.png").stat().st_size > 10_000
    record = json.loads((results / "diagnostics" / "kde_density.json").read_text())
    assert record["git"] and record["lock"]["sha256"] and record["summary"]["runs"] == 1
    assert record["summary"]["mean_auc_exact"] == frame.loc[0, "auc_exact"]
    assert "wrote kde_density.csv" in out

    config = next(runs.glob("digits-lsa/3/baseline-kde/config.json"))
    config.write_text("{}")
    assert script.main([str(path), "--results-root", str(results)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "kde_density_check: error:" in err and "baseline-kde" in err, err
    assert "; nothing was written" in err, err
