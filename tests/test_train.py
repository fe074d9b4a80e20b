"""Training engine: complete run folders, exact resume, skip of finished runs, refusal to overwrite,
NaN guard (the corrupt-checkpoint fallback itself is tested in test_runs.py).
Tiny settings: digits, 4 train images, batch 2 (2 batches per epoch), 2 epochs, 32x32, CPU."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY
from torch.utils.data import Subset

from piade_lib.engine import checkpoints, folders
from piade_lib.engine.config import RunConfig
from piade_lib.engine.lifecycle import evaluate_run, train_run
from piade_lib.engine.splits import limit_dataset
from piade_lib.engine.trainer import NonFiniteLossError
from piade_lib.metrics import METRICS_KEYS, TERMS

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture(scope="module")
def straight_run(tiny_run: Path) -> Path:
    """2 epochs in one go (the reference for the resume tests): the session's shared tiny run."""
    return tiny_run


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoints.load_torch(run_dir / "checkpoints" / "final.pt")["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def _losses(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[["epoch", *TERMS]]


def test_resolved_fills_from_preset_and_dataset() -> None:
    paper = RunConfig(dataset="digits", normal_class=3).resolved()
    assert (paper.lr, paper.weight_decay, paper.batch_size, paper.epochs) == (1e-3, 1e-4, 120, 400)
    assert (paper.protocol, paper.image_size, paper.normal_class, paper.variant) == ("lsa", 32, "3", "paper-v2")
    code = RunConfig(dataset="digits", normal_class="3", preset="authors_code", n_vectors=1, lr=5e-4).resolved()
    assert (code.lr, code.weight_decay, code.batch_size, code.variant) == (5e-4, 1e-3, 60, "authors_code-v1")
    assert RunConfig(dataset="digits", normal_class="3").to_dict()["preset_resolved"]["backbone"] == "resnet18"
    with pytest.raises(ValueError, match="unknown class"):
        RunConfig(dataset="digits", normal_class="eleven").resolved()


def test_limit_dataset_is_seeded_and_stratified() -> None:
    labels = [0] * 10 + [1] * 90
    sub = limit_dataset(list(range(100)), 10, seed=0, labels=labels)
    chosen = [labels[i] for i in sub.indices]
    assert chosen.count(0) == 1 and chosen.count(1) == 9
    assert sub.indices == limit_dataset(list(range(100)), 10, seed=0, labels=labels).indices
    assert len(limit_dataset(list(range(5)), 10, seed=0)) == 5
    # rounding up the minority to one image must not push the other class out (AUROC needs both)
    for n, (a, b) in [(2, (1, 99)), (3, (1, 50)), (5, (2, 7))]:
        few = [0] * a + [1] * b
        for seed in range(20):
            sub = limit_dataset(list(range(a + b)), n, seed=seed, labels=few)
            chosen = [few[i] for i in sub.indices]
            assert len(chosen) == n and chosen.count(0) >= 1 and chosen.count(1) >= 1, (n, a, b, seed)


def test_run_folder_is_complete(straight_run: Path) -> None:
    d = straight_run
    assert d.parts[-4:] == ("runs", "digits-lsa", "1", "paper-v2")
    for name in (
        "config.json",
        "manifest.json",
        "provenance.json",
        "history.csv",
        "scores.csv",
        "roc.csv",
        "metrics.json",
        "checkpoints/final.pt",
        "checkpoints/last.pt",
        "checkpoints/epoch_0002.pt",
    ):
        assert (d / name).is_file(), name
    assert sorted(p.name for p in (d / "checkpoints").glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    config = json.loads((d / "config.json").read_text())
    assert config["lr"] == 1e-3 and config["preset_resolved"]["name"] == "paper" and config["config_hash"]
    metrics = json.loads((d / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(metrics) and set(metrics["term_auc"]) == set(TERMS)
    assert metrics["n_normal"] + metrics["n_anomalous"] == 4 and metrics["n_normal"] >= 1
    assert metrics["pixel_auroc"] is None and metrics["n_bootstrap"] == 10
    assert metrics["auc_ci_low"] <= metrics["auc"] <= metrics["auc_ci_high"]
    scores = pd.read_csv(d / "scores.csv")
    assert list(scores.columns) == ["id", "label", *TERMS, "mean_image_mse"] and len(scores) == 4
    hist = pd.read_csv(d / "history.csv")
    assert list(hist.columns) == ["epoch", "step", *TERMS, "seconds"] and hist["epoch"].tolist() == [1, 2]
    assert hist["step"].tolist() == [2, 4]  # 4 images, batch 2: 2 optimiser steps per epoch
    prov = json.loads((d / "provenance.json").read_text())
    assert prov["pretrained"] is False and prov["sessions"][-1]["status"] == "finished" and prov["versions"]["torch"]
    final = torch.load(d / "checkpoints" / "final.pt", weights_only=True)
    assert final["epoch"] == 2 and final["model_config"]["n_vectors"] == 2


def test_finished_run_is_not_redone(straight_run: Path, monkeypatch) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (straight_run / "checkpoints").iterdir()}
    history = (straight_run / "history.csv").read_text()

    def forbidden(*a, **k):
        raise AssertionError("a finished run was rebuilt")

    monkeypatch.setattr("piade_lib.model.network.build_model", forbidden)
    monkeypatch.setattr("piade_lib.model.losses.PiadeLoss", forbidden)
    # the device is an execution setting: a finished CPU run is also finished for "auto"
    again = train_run(RunConfig(**{**TINY, "device": "auto"}), straight_run.parents[3], progress=False)
    assert again == straight_run
    assert {p.name: p.stat().st_mtime_ns for p in (straight_run / "checkpoints").iterdir()} == before
    assert (straight_run / "history.csv").read_text() == history


def test_different_config_is_refused_not_overwritten(straight_run: Path) -> None:
    before = (straight_run / "config.json").read_text()
    with pytest.raises(folders.RunConfigMismatchError) as err:
        train_run(RunConfig(**{**TINY, "epochs": 3}), straight_run.parents[3], progress=False)
    msg = str(err.value)
    assert str(straight_run) in msg and "epochs: 2 (in folder) vs 3 (requested)" in msg and "overwrite" in msg
    assert (straight_run / "config.json").read_text() == before


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, straight_run: Path, deterministic) -> None:
    cfg = RunConfig(**TINY)
    d = train_run(cfg, tmp_path, progress=False, stop_after=1)  # as if killed after epoch 1 of 2
    assert not (d / "checkpoints" / "final.pt").exists() and not (d / "metrics.json").exists()
    assert checkpoints.load_torch(d / "checkpoints" / "last.pt")["epoch"] == 1
    assert train_run(cfg, tmp_path, progress=False) == d
    prov = json.loads((d / "provenance.json").read_text())
    assert [s["resumed_from_epoch"] for s in prov["sessions"]] == [0, 1]
    _assert_same_weights(d, straight_run)
    pd.testing.assert_frame_equal(_losses(d), _losses(straight_run))


def test_nan_loss_stops_with_last_good_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    from piade_lib.model.losses import PiadeLoss

    original = PiadeLoss.per_image
    calls = {"n": 0}

    def nan_on_third_batch(self, recon, target, **kwargs):  # 2 batches per epoch: call 3 = epoch 2, batch 1
        terms = original(self, recon, target, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms = {**terms, "total": terms["total"] * float("nan")}
        return terms

    monkeypatch.setattr(PiadeLoss, "per_image", nan_on_third_batch)
    cfg = RunConfig(**TINY)
    with pytest.raises(NonFiniteLossError) as err:
        train_run(cfg, tmp_path, progress=False)
    e = err.value
    assert (e.epoch, e.batch) == (2, 1) and e.last_checkpoint.name == "epoch_0001.pt"
    assert "epoch 2, batch 1" in str(e) and "epoch_0001.pt" in str(e)
    d = cfg.run_dir(tmp_path)
    last = checkpoints.load_torch(d / "checkpoints" / "last.pt")  # intact and loadable
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (d / "checkpoints" / "final.pt").exists() and not (d / "metrics.json").exists()
    assert pd.read_csv(d / "history.csv")["epoch"].tolist() == [1]
    assert json.loads((d / "provenance.json").read_text())["sessions"][-1]["status"] == "stopped: NonFiniteLossError"


def test_an_interrupt_while_a_checkpoint_is_written_keeps_the_last_one_and_the_run_resumes(
    tmp_path: Path, monkeypatch
) -> None:
    """Ctrl-C (or a cancelled Ray task) while epoch 2's checkpoint is written, where torch.save's zip
    writer, cut off mid-file, then fails in its own clean-up: the session is recorded as interrupted,
    with where it started, the half-written file is gone, epoch 1's checkpoint is intact, and the
    same call resumes from it."""
    from piade_lib.engine import files

    save = torch.save

    def cut_off(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 2:  # epoch 2's checkpoint
            try:
                raise KeyboardInterrupt
            finally:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
        return save(obj, f, *a, **k)

    monkeypatch.setattr(files.torch, "save", cut_off)
    cfg = RunConfig(**{**TINY, "epochs": 3, "checkpoint_every": 1})
    with pytest.raises(RuntimeError, match="unexpected pos"):
        train_run(cfg, tmp_path, progress=False)
    d = cfg.run_dir(tmp_path)
    (stopped,) = json.loads((d / "provenance.json").read_text())["sessions"]
    assert stopped["status"] == "stopped: KeyboardInterrupt"
    assert (stopped["resumed_from_epoch"], stopped["epochs_done"]) == (0, 2)
    assert checkpoints.load_torch(d / "checkpoints" / "last.pt")["epoch"] == 1
    assert not [p.name for p in (d / "checkpoints").iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(files.torch, "save", save)
    assert train_run(cfg, tmp_path, progress=False) == d
    sessions = json.loads((d / "provenance.json").read_text())["sessions"]
    assert [(s["status"], s["resumed_from_epoch"]) for s in sessions] == [
        ("stopped: KeyboardInterrupt", 0),
        ("finished", 1),
    ]
    assert (d / "metrics.json").is_file()


class _DiskFillsUp:
    """A file on a disk with ``room`` bytes left: the write that would overflow it fails with ENOSPC, as on a
    full disk (torch.save's zip writer then fails in its own clean-up, with the OSError as its context)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, b) -> int:
        n = len(memoryview(b))
        if n > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= n
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def test_a_full_disk_while_a_checkpoint_is_written_names_it_keeps_the_last_one_and_the_run_resumes(
    tmp_path: Path, monkeypatch
) -> None:
    """The disk fills up while epoch 2's checkpoint is written: the error is the operating system's, naming
    that checkpoint (not torch's "unexpected pos", not the temporary file) and the space left; the partial
    file is gone, epoch 1's checkpoint is intact, and once there is room the same call resumes from it."""
    from piade_lib.engine import files

    save = torch.save

    def fill_up_on_epoch_2(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f = _DiskFillsUp(f, room=4096)
        return save(obj, f, *a, **k)

    monkeypatch.setattr(files.torch, "save", fill_up_on_epoch_2)
    cfg = RunConfig(**{**TINY, "epochs": 3, "checkpoint_every": 1})
    with pytest.raises(OSError) as err:
        train_run(cfg, tmp_path, progress=False)
    d = cfg.run_dir(tmp_path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(d / "checkpoints" / "epoch_0002.pt")
    assert re.search(r"No space left on device after [0-9.]+ KiB of it \([0-9.,]+ [KMG]iB free there", str(err.value))
    (stopped,) = json.loads((d / "provenance.json").read_text())["sessions"]
    assert stopped["status"] == "stopped: OSError" and stopped["epochs_done"] == 2
    assert checkpoints.load_torch(d / "checkpoints" / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["epoch_0001.pt", "last.pt"]

    monkeypatch.setattr(files.torch, "save", save)
    assert train_run(cfg, tmp_path, progress=False) == d
    sessions = json.loads((d / "provenance.json").read_text())["sessions"]
    assert [(s["status"], s["resumed_from_epoch"]) for s in sessions] == [("stopped: OSError", 0), ("finished", 1)]


def test_single_class_test_set_gives_null_auc(tmp_path: Path, straight_run: Path) -> None:
    from piade_lib.engine.splits import task_from_config

    d = tmp_path / "copy"
    (d / "checkpoints").mkdir(parents=True)
    shutil.copy(straight_run / "config.json", d / "config.json")
    os.link(straight_run / "checkpoints" / "final.pt", d / "checkpoints" / "final.pt")
    task, train, test = task_from_config(folders.load_config(d))
    normal_only = Subset(test, [i for i in range(len(test)) if test[i]["label"] == 0])
    metrics = evaluate_run(d, progress=False, splits=(task, train, normal_only))
    assert metrics["auc"] is None and metrics["n_anomalous"] == 0 and "only normal" in metrics["note"]
    assert json.loads((d / "metrics.json").read_text())["auc"] is None
    assert len(pd.read_csv(d / "scores.csv")) == len(normal_only)


def test_failed_start_leaves_no_run_folder(tmp_path: Path, monkeypatch) -> None:
    from piade_lib.model.weights import PretrainedWeightsUnavailable

    def unavailable(*a, **k):
        raise PretrainedWeightsUnavailable("no weights offline")

    monkeypatch.setattr("piade_lib.model.network.build_model", unavailable)
    cfg = RunConfig(**{**TINY, "pretrained": True})
    with pytest.raises(PretrainedWeightsUnavailable):
        train_run(cfg, tmp_path, progress=False)
    assert not cfg.run_dir(tmp_path).exists()  # so a retry with pretrained=False is not refused


def test_dataset_with_masks_gets_a_pixel_auroc(tmp_path: Path) -> None:
    cfg = RunConfig(
        dataset="textures",
        normal_class="brick",
        epochs=1,
        batch_size=2,
        limit_train=2,
        limit_test=4,
        n_bootstrap=5,
        device="cpu",
    )
    d = train_run(cfg, tmp_path, progress=False)
    metrics = json.loads((d / "metrics.json").read_text())
    assert d.parts[-3:] == ("textures-mvtec", "brick", "paper-v2")
    assert metrics["pixel_auroc"] is not None and 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert metrics["n_normal"] >= 1 and metrics["n_anomalous"] >= 1
