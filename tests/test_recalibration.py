"""BatchNorm recalibration (piade_lib/engine/recalibration.py, scripts/bn_recalibration.py): the running
statistics become the plain average over the data, the weights and the run folders stay as they were, and
the scores as trained are the run's own metrics."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from data_fixtures import DictItems
from torch import nn

from piade_lib.engine.recalibration import (
    NETWORK_PARTS,
    batchnorm_layers,
    recalibrate_batchnorm,
    recalibration_summary,
)
from piade_lib.experiments import profiles, runner

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parent.parent


def _images(images: torch.Tensor) -> DictItems:
    return DictItems([{"image": im, "label": 0, "id": str(i)} for i, im in enumerate(images)])


def test_running_statistics_become_the_average_over_equal_batches_and_the_weights_stay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.95), nn.ReLU(), nn.BatchNorm2d(4))
    images = torch.rand(9, 3, 8, 8) * 3 + 1  # 9 in batches of 4: the ninth image is left out
    with torch.no_grad():
        model.train()
        model(torch.rand(2, 3, 8, 8))  # running statistics of one unrelated batch, as momentum 0.95 leaves them
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    model.eval()
    assert recalibrate_batchnorm(model, _images(images), batch_size=4) == 2
    with torch.no_grad():
        features = model[0](images[:8])
    want_mean = features.mean(dim=(0, 2, 3))
    want_var = torch.stack([f.var(dim=(0, 2, 3)) for f in features.split(4)]).mean(0)  # unbiased, per batch
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, want_mean)
    torch.testing.assert_close(bn.running_var, want_var)
    assert bn.momentum == 0.95 and model[3].momentum == 0.1 and not model.training
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="at least 2 images"):
        recalibrate_batchnorm(model, _images(images[:1]))


def test_only_a_submodule_is_re_estimated_with_the_rest_evaluating_as_trained() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("pyramid", nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4, momentum=0.95)))
    with torch.no_grad():
        model.train()
        model(torch.rand(2, 3, 8, 8) * 2)  # statistics of one unrelated batch
    encoder_stats = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.eval()
    images = torch.rand(8, 3, 8, 8) * 3 + 1
    assert recalibrate_batchnorm(model, _images(images), batch_size=4, only="pyramid") == 1
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, encoder_stats[k]), k  # the encoder's statistics are kept...
    with torch.no_grad():
        features = torch.relu(model.encoder(images))  # ...and used, as at test time
    bn = model.pyramid[1]
    torch.testing.assert_close(bn.running_mean, features.mean(dim=(0, 2, 3)))
    want_var = torch.stack([f.var(dim=(0, 2, 3)) for f in features.split(4)]).mean(0)
    torch.testing.assert_close(bn.running_var, want_var)
    assert bn.momentum == 0.95 and not model.training and not bn.training
    assert len(batchnorm_layers(model, "pyramid")) == 1 and len(batchnorm_layers(model)) == 2
    with pytest.raises(ValueError, match=r"no BatchNorm layer in submodule 'decoder'; .*\['encoder', 'pyramid'\]"):
        recalibrate_batchnorm(model, _images(images), only="decoder")


def _tiny_profile(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-bn.yaml"
    section = {"dataset": "digits", "protocol": "lsa", "classes": ["3"], "presets": ["paper", "authors_code"]}
    defaults = {"pretrained": False, "device": "cpu", "steps": 2, "batch_size": 8, "limit_train": 16}
    defaults.update({"limit_test": 24, "n_bootstrap": 20, "threads": 1})
    raw = {"name": "tiny-bn", "defaults": defaults, "sections": {"s": {**section, "baselines": ["ocsvm"]}}}
    path.write_text(yaml.safe_dump(raw))
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _script():
    spec = importlib.util.spec_from_file_location("bn_recalibration", ROOT / "scripts" / "bn_recalibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_scores_every_piade_run_both_ways_and_changes_no_run_folder(tmp_path, capsys) -> None:
    path = _tiny_profile(tmp_path)
    results = tmp_path / "results"
    script = _script()
    assert script.main([str(path), "--results-root", str(results)]) == 2
    assert "2 PIADE runs of profile tiny-bn have not finished" in capsys.readouterr().err
    prof = profiles.load_profile(path)
    runner.run_sections(prof, ["s"], results, verbose=False, executor="local")
    runs = results / "runs"
    before = _digests(runs)
    assert script.main([str(path), "--results-root", str(results), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert _digests(runs) == before  # lock files come and go; nothing in a run folder changed
    frame = pd.read_csv(results / "diagnostics" / "bn_recalibration.csv")
    assert sorted(frame["preset"]) == ["authors_code", "paper"]  # the OC-SVM run has no BatchNorm
    assert (frame["n_batchnorm"] > 0).all()
    assert (frame["auc_as_trained"] == frame["metrics_auc"]).all()  # the run's own batch size and threads
    assert frame["normal_recon_mse_recalibrated"].ne(frame["normal_recon_mse_as_trained"]).all()
    assert (results / "diagnostics" / "bn_recalibration.png").stat().st_size > 10_000
    assert "largest |AUROC as trained - metrics.json's|: 0.00e+00" in out and "authors_code" in out
    record = json.loads((results / "diagnostics" / "bn_recalibration.json").read_text())
    assert record["max_abs_auc_as_trained_minus_metrics"] == 0.0 and record["git"] and record["lock"]["sha256"]
    assert str(tmp_path) not in json.dumps(record)  # no path of this machine: the command as the args, portable
    command = record["command"]
    assert command[command.index("--results-root") + 1] == results.name
    by_preset = {r["preset"]: r for r in record["summary"]}
    assert by_preset["paper"]["mean_auc_as_trained"] == frame.loc[frame.preset == "paper", "auc_as_trained"].mean()
    final = (runs / "digits-lsa" / "3" / "paper-v2" / "checkpoints" / "final.pt").read_bytes()
    (runs / "digits-lsa" / "3" / "paper-v2" / "checkpoints" / "final.pt").write_bytes(b"damaged")
    assert script.main([str(path), "--results-root", str(results)]) == 1
    err = capsys.readouterr().err  # the progress bar, then the error naming the run
    assert "Traceback" not in err and "bn_recalibration: error:" in err and "paper-v2" in err, err
    assert "; nothing was written" in err, err
    (runs / "digits-lsa" / "3" / "paper-v2" / "checkpoints" / "final.pt").write_bytes(final)
    assert script.main([str(path), "--results-root", str(results), "--only", "pyramid"]) == 0
    capsys.readouterr()
    pyramid = pd.read_csv(results / "diagnostics" / "bn_recalibration_pyramid.csv")
    assert (pyramid["n_batchnorm"] == 4).all() and (pyramid["auc_as_trained"] == pyramid["metrics_auc"]).all()
    assert (pyramid["n_batchnorm"] < frame.set_index("variant").loc[pyramid["variant"], "n_batchnorm"].values).all()
    record = json.loads((results / "diagnostics" / "bn_recalibration_pyramid.json").read_text())
    assert record["args"]["only"] == "pyramid" and record["layers_reestimated"] == "the pyramid's BatchNorm layers"
    assert pd.read_csv(results / "diagnostics" / "bn_recalibration.csv").equals(frame)  # the all-layer files stay
    assert script.main([str(path), "--results-root", str(results), "--only", "decoder", "--preset", "paper"]) == 0
    capsys.readouterr()
    decoder = pd.read_csv(results / "diagnostics" / "bn_recalibration_decoder_paper.csv")
    assert decoder["preset"].tolist() == ["paper"] and (decoder["n_batchnorm"] > 0).all()
    assert script.main([str(path), "--results-root", str(results), "--only", "encoder", "--preset", "paper"]) == 0
    encoder = pd.read_csv(results / "diagnostics" / "bn_recalibration_encoder_paper.csv")
    capsys.readouterr()
    assert script.main([str(path), *f"--results-root {results} --only encoder --preset paper --per-layer".split()]) == 0
    capsys.readouterr()
    assert pd.read_csv(results / "diagnostics" / "bn_recalibration_encoder_paper.csv").equals(encoder)
    layers = pd.read_csv(results / "diagnostics" / "bn_recalibration_encoder_paper_layers.csv")
    assert len(layers) == encoder["n_batchnorm"].item() and layers["layer"].str.startswith("encoder.").all()
    assert layers["index"].is_monotonic_increasing and (layers[["mean_shift", "log_var_ratio"]] >= 0).all().all()
    assert (layers["values_per_channel"] == 8 * layers["height"] * layers["width"]).all()  # the runs' batch of 8
    assert layers["height"].iloc[0] == 16 and layers["height"].iloc[-1] == 2  # 32x32 input, no stem max-pool
    assert (layers["auc_as_trained"] == encoder["auc_as_trained"].item()).all()
    assert (results / "diagnostics" / "bn_recalibration_encoder_paper_layers.png").stat().st_size > 10_000
    assert script.main([str(path), "--results-root", str(results), "--preset", "paperr"]) == 2
    assert "has no 'paperr' runs; its presets: ['authors_code', 'paper']" in capsys.readouterr().err
    baseline = next(d for d in (runs / "digits-lsa" / "3").iterdir() if d.name.startswith("baseline-"))
    with pytest.raises(ValueError, match="only PIADE runs"):
        recalibration_summary(baseline)


def test_the_summary_tells_the_readings_flipped_apart_when_a_profile_flips_any() -> None:
    script = _script()
    frame = pd.DataFrame(
        {
            "preset": ["authors_code"] * 4,
            "flip": ["", "", "backbone", "backbone"],
            "auc_as_trained": [0.6, 0.8, 0.9, 0.7],
            "auc_recalibrated": [0.9, 0.8, 0.9, 0.8],
            "recon_to_mean_image_as_trained": [2.0, 0.9, 0.8, 1.1],
            "recon_to_mean_image_recalibrated": [1.1, 0.9, 0.8, 0.9],
        }
    )
    summary = script.summarise(frame).set_index("flip")
    assert summary.loc["", "runs"] == 2 and summary.loc["backbone", "runs"] == 2
    assert summary.loc["", "min_auc_as_trained"] == 0.6 and summary.loc["backbone", "mean_auc_as_trained"] == 0.8
    assert summary.loc["", "beat_mean_image_as_trained"] == 1 and summary.loc["", "beat_mean_image_recalibrated"] == 1
    assert summary.loc["backbone", "beat_mean_image_recalibrated"] == 2
    assert summary.loc["", "collapsed_as_trained"] == 1 and summary.loc["", "largest_ratio_as_trained"] == 2.0
    assert summary.loc["", "collapsed_recalibrated"] == 0 and summary.loc["backbone", "collapsed_as_trained"] == 0
    plain = script.summarise(frame.assign(flip=""))  # no flips: one row per preset, as before
    assert plain.columns[0] == "preset" and "flip" not in plain and plain["runs"].tolist() == [4]


def test_the_drift_of_each_layer_is_measured_in_re_estimated_units() -> None:
    from piade_lib.engine.recalibration import _feature_map_size, batchnorm_drift

    model = nn.Sequential(nn.BatchNorm2d(2), nn.Flatten(), nn.BatchNorm1d(3))
    model[0].running_mean.fill_(1.0)
    model[0].running_var.fill_(4.0)  # re-estimated: mean 1, sd 2
    trained = {"0": (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 4.0])), "2": (torch.zeros(3), torch.ones(3))}
    rows = batchnorm_drift(trained, model, {"0": (3, 3), "2": (1, 1)}, train_batch_size=8, eps=0.0)
    first, second = rows
    assert (first["layer"], first["index"], first["channels"], first["values_per_channel"]) == ("0", 0, 2, 72)
    assert first["mean_shift"] == pytest.approx((1 / 2 + 0) / 2)  # |0 - 1| / 2 and 0, averaged over channels
    assert first["log_var_ratio"] == pytest.approx((abs(np.log(1 / 4)) + 0) / 2)
    assert (second["index"], second["values_per_channel"], second["mean_shift"], second["log_var_ratio"]) == (
        1,
        8,
        0.0,
        0.0,
    )
    assert batchnorm_drift({"0": trained["0"]}, model, {}, 8)[0]["values_per_channel"] == 0  # size not seen
    assert _feature_map_size(torch.zeros(4, 2, 5, 6)) == (5, 6)
    assert _feature_map_size(torch.zeros(4, 2, 7)) == (7, 1) and _feature_map_size(torch.zeros(4, 2)) == (1, 1)


def test_batchnorm_layers_of_both_presets_include_the_pyramid_ones() -> None:
    from piade_lib.model.network import build_model
    from piade_lib.presets import get_preset

    for name, momentum in (("paper", 0.1), ("authors_code", 0.95)):
        model = build_model(get_preset(name), image_size=32, n_vectors=2, pretrained=False)
        pyramid = batchnorm_layers(model.pyramid)
        assert pyramid and {bn.momentum for bn in pyramid} == {momentum}
        assert len(batchnorm_layers(model)) > len(pyramid)
        # the parts bn_recalibration.py --only offers cover every BatchNorm layer, once
        assert sum(len(batchnorm_layers(model, part)) for part in NETWORK_PARTS) == len(batchnorm_layers(model))
