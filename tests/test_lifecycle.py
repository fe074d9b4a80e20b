"""The run lifecycle under hostile conditions: two processes on one folder, --overwrite during a run,
a killed session, changed or corrupt data, a failed start, weights of another configuration, and the
wall-clock checkpoint policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY as CONFTEST_TINY
from PIL import Image

from piade_lib.data import PiadeDataError
from piade_lib.engine import checkpoints, files, folders
from piade_lib.engine.config import RunConfig
from piade_lib.engine.lifecycle import DataChangedError, evaluate_run, train_run
from piade_lib.engine.scoring import load_trained
from piade_lib.engine.trainer import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]
TINY = {k: v for k, v in CONFTEST_TINY.items() if k not in ("checkpoint_every", "keep_checkpoints")}

pytestmark = pytest.mark.usefixtures("single_thread")


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock (prints 'held' once it has it)."""
    code = (
        "import sys, time\nfrom piade_lib.engine import folders\n"
        "with folders.locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_on_a_locked_folder_stops_naming_the_holder(tmp_path: Path) -> None:
    cfg = RunConfig(**TINY)
    run_dir = cfg.run_dir(tmp_path)
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(folders.RunFolderBusyError, match=f"pid {holder.pid}") as err:
            train_run(cfg, tmp_path, progress=False)
        assert "since" in str(err.value) and not run_dir.exists()  # nothing written
        with pytest.raises(folders.RunFolderBusyError):  # --overwrite takes the lock first, too
            train_run(cfg, tmp_path, progress=False, overwrite=True)
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder releases the lock
        holder.wait()
    assert (train_run(cfg, tmp_path, progress=False) / "metrics.json").is_file()


def test_overwrite_moves_the_old_run_aside_only_once_the_new_one_is_validated(tmp_path: Path, monkeypatch) -> None:
    old = train_run(RunConfig(**TINY), tmp_path, progress=False)
    before = json.loads((old / "config.json").read_text())["config_hash"]
    bad = RunConfig(**{**TINY, "epochs": 3, "device": "cuda:7"})  # no such device here
    with pytest.raises(RuntimeError, match="cuda"):
        train_run(bad, tmp_path, progress=False, overwrite=True)
    assert json.loads((old / "config.json").read_text())["config_hash"] == before
    assert not list(old.parent.glob("*.old-*"))  # nothing moved aside, no stray folders
    with pytest.warns(UserWarning, match="moved the previous run folder"):
        new = train_run(RunConfig(**{**TINY, "epochs": 3}), tmp_path, progress=False, overwrite=True)
    assert new == old and len(list(old.parent.glob("*.old-*"))) == 1
    config_hash = json.loads((new / "config.json").read_text())["config_hash"]
    assert config_hash != before
    assert json.loads((new / "metrics.json").read_text())["config_hash"] == config_hash
    assert checkpoints.load_torch(new / "checkpoints" / "final.pt")["config_hash"] == config_hash


def test_a_killed_session_is_recorded_as_killed_and_the_run_resumes(tmp_path: Path) -> None:
    kw = {**TINY, "epochs": 400, "checkpoint_every": 1}
    code = (
        "import sys\nfrom piade_lib.engine.config import RunConfig\nfrom piade_lib.engine.lifecycle import train_run\n"
        f"train_run(RunConfig(**{kw!r}), sys.argv[1], progress=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    last = RunConfig(**kw).run_dir(tmp_path) / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "the run never wrote a checkpoint"
    run_dir = last.parents[1]
    assert json.loads((run_dir / "provenance.json").read_text())["sessions"][-1]["status"] == "running"
    # the next session (stopped after one more epoch, to keep the test short) finds the dead one
    train_run(RunConfig(**kw), tmp_path, progress=False, stop_after=int(checkpoints.load_torch(last)["epoch"]) + 1)
    sessions = json.loads((run_dir / "provenance.json").read_text())["sessions"]
    assert sessions[0]["status"] == "killed" and "killed or crashed" in sessions[0]["note"]
    assert sessions[1]["status"].startswith("stopped after epoch") and sessions[1]["resumed_from_epoch"] >= 1


def test_a_run_that_fails_before_saving_anything_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    from piade_lib.model.losses import PiadeLoss

    original = PiadeLoss.per_image

    def always_nan(self, recon, target, **kwargs):
        terms = original(self, recon, target, **kwargs)
        return {**terms, "total": terms["total"] * float("nan")}

    monkeypatch.setattr(PiadeLoss, "per_image", always_nan)
    cfg = RunConfig(**{**TINY, "lr": 1e38})
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet") as err:
        train_run(cfg, tmp_path, progress=False)
    assert (err.value.epoch, err.value.batch) == (1, 1)
    assert not cfg.run_dir(tmp_path).exists()  # so the corrected command below is not refused
    monkeypatch.setattr(PiadeLoss, "per_image", original)
    assert (train_run(RunConfig(**TINY), tmp_path, progress=False) / "metrics.json").is_file()


def test_final_weights_of_another_configuration_are_refused(tiny_run_copy: Path) -> None:
    d = tiny_run_copy
    cfg = json.loads((d / "config.json").read_text())
    cfg["lr"] = 0.5
    cfg["config_hash"] = folders.config_hash({k: v for k, v in cfg.items() if k != "config_hash"})
    files.write_json(d / "config.json", cfg)
    with pytest.raises(folders.RunConfigMismatchError, match="mixes two runs") as err:
        load_trained(d)
    assert cfg["config_hash"] in str(err.value)


def test_wall_clock_checkpoints_keep_resume_bit_exact(tmp_path: Path) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        every_epoch = train_run(
            RunConfig(**{**TINY, "epochs": 3, "checkpoint_every": 1}), tmp_path / "a", progress=False
        )
        cfg = RunConfig(**{**TINY, "epochs": 3, "checkpoint_minutes": 60.0})  # same run: an execution setting
        d = train_run(cfg, tmp_path / "b", progress=False, stop_after=2)
        ckpts = sorted(p.name for p in (d / "checkpoints").glob("epoch_*.pt"))
        assert ckpts == ["epoch_0002.pt"]  # not every epoch: only when the session ends
        train_run(cfg, tmp_path / "b", progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    wa = checkpoints.load_torch(every_epoch / "checkpoints" / "final.pt")["model"]
    wb = checkpoints.load_torch(d / "checkpoints" / "final.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- data --------------------------------------------------------------------------------------
def _folder_dataset(root: Path, n_train: int = 6, n_good: int = 3, n_bad: int = 3) -> Path:
    rng = np.random.default_rng(0)
    cat = root / "part"
    for sub, n, level in (("train/good", n_train, 80), ("test/good", n_good, 80), ("test/scratch", n_bad, 200)):
        (cat / sub).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(level, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(cat / sub / f"{i:03d}.png")
    return cat


def _folder_cfg(cat: Path) -> RunConfig:
    return RunConfig(
        dataset="folder",
        normal_class="part",
        data_root=str(cat),
        image_size=32,
        epochs=1,
        batch_size=2,
        n_bootstrap=10,
        device="cpu",
        pretrained=False,
    )


def test_changed_data_is_refused_by_evaluate_unless_accepted(tmp_path: Path) -> None:
    cat = _folder_dataset(tmp_path / "data")
    d = train_run(_folder_cfg(cat), tmp_path / "results", progress=False)
    before = json.loads((d / "metrics.json").read_text())
    manifest = json.loads((d / "manifest.json").read_text())
    img = np.full((40, 40, 3), 255, np.uint8)
    Image.fromarray(img).save(cat / "test" / "good" / "000.png")  # a test image replaced
    (cat / "train" / "good" / "005.png").unlink()  # a train image deleted
    with pytest.raises(DataChangedError, match="--accept-changed-data"):
        evaluate_run(d, progress=False)
    assert json.loads((d / "metrics.json").read_text()) == before  # nothing overwritten
    metrics = evaluate_run(d, progress=False, accept_changed_data=True)
    assert json.loads((d / "manifest.json").read_text())["checksum"] != manifest["checksum"]
    assert json.loads((d / "metrics.json").read_text())["auc"] == metrics["auc"]


def test_a_corrupt_test_image_stops_the_run_before_training(tmp_path: Path) -> None:
    cat = _folder_dataset(tmp_path / "data")
    (cat / "test" / "scratch" / "001.png").write_bytes(b"not a png")
    cfg = _folder_cfg(cat)
    with pytest.raises(PiadeDataError, match="001.png"):
        train_run(cfg, tmp_path / "results", progress=False)
    assert not cfg.run_dir(tmp_path / "results").exists()


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("epochs", -1), ("batch_size", 0), ("batch_size", 1), ("seed", -1), ("n_bootstrap", -1)],
)
def test_out_of_range_settings_are_refused_before_anything_runs(tmp_path: Path, field: str, value: int) -> None:
    cfg = RunConfig(**{**TINY, field: value})
    with pytest.raises(ValueError, match=f"{field} must be >= "):
        train_run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("checkpoint_every", "rows_written"), [(None, [3]), (1, [1, 2, 3])])
def test_history_csv_is_written_with_the_checkpoints_not_every_epoch(
    checkpoint_every, rows_written, tmp_path: Path, monkeypatch, single_thread
) -> None:
    """An epoch of one batch (COIL-100) takes ~26 ms on an H100; an fsynced history.csv costs ~1.4 ms on a
    local disk, so the file is written when a checkpoint is (and holds the epochs the checkpoint holds)."""
    written: list[int] = []
    original = files.write_csv

    def spy(path, frame):
        if Path(path).name == "history.csv":
            written.append(len(frame))
        return original(path, frame)

    monkeypatch.setattr(files, "write_csv", spy)
    cfg = RunConfig(**{**TINY, "epochs": 3, "checkpoint_every": checkpoint_every, "checkpoint_minutes": 60})
    run_dir = train_run(cfg, tmp_path, progress=False)
    assert written == rows_written
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2, 3]
