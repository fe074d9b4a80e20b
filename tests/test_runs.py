"""Run folders: config hashing, refusal to overwrite, atomic writes, checkpoints, RNG state, provenance."""

from __future__ import annotations

import errno
import json
import random
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from piade_lib.engine import checkpoints, files, folders, provenance


def _config(**kw):
    cfg = {
        "dataset": "digits",
        "normal_class": "0",
        "epochs": 4,
        "lr": 1e-3,
        "device": "cpu",
        "preset_resolved": {"name": "paper", "se_reduction": 2},
    }
    cfg.update(kw)
    return cfg


def test_run_dir_layout(tmp_path: Path) -> None:
    d = folders.run_dir_for(tmp_path, "mvtec", "mvtec", "metal_nut", folders.piade_variant("paper", 2))
    assert d == tmp_path / "runs" / "mvtec-mvtec" / "metal_nut" / "paper-v2"
    assert folders.run_dir_for(tmp_path, "digits", "lsa", 3, folders.baseline_variant("kde")).parts[-2:] == (
        "3",
        "baseline-kde",
    )
    with pytest.raises(ValueError):
        folders.safe_name("..")


def test_config_hash_ignores_execution_keys_only() -> None:
    base = _config()
    assert folders.config_hash(base) == folders.config_hash(_config(device="cuda", checkpoint_every=5, n_bootstrap=10))
    assert folders.config_hash(base) != folders.config_hash(_config(epochs=5))
    assert folders.config_hash(base) != folders.config_hash(
        _config(preset_resolved={"name": "paper", "se_reduction": 16})
    )
    # download=True only fetches the data (its checksum is checked by the manifest): same run
    assert folders.config_hash(_config(protocol_params={"download": True})) == folders.config_hash(
        _config(protocol_params={})
    )
    assert folders.config_hash(_config(protocol_params={"holdout_fraction": 0.1})) != folders.config_hash(
        _config(protocol_params={})
    )


def test_prepare_run_dir_refuses_a_different_config_and_names_the_keys(tmp_path: Path) -> None:
    d = tmp_path / "run"
    folders.prepare_run_dir(d, _config())
    (d / "history.csv").write_text("epoch\n1\n")
    assert folders.prepare_run_dir(d, _config(device="cuda")) == d  # execution key only: same run
    with pytest.raises(folders.RunConfigMismatchError) as err:
        folders.prepare_run_dir(d, _config(epochs=8, preset_resolved={"name": "paper", "se_reduction": 16}))
    msg = str(err.value)
    assert str(d) in msg and "epochs: 4" in msg and "8 (requested)" in msg
    assert "preset_resolved.se_reduction" in msg and "overwrite" in msg
    assert json.loads((d / "config.json").read_text())["epochs"] == 4  # untouched
    assert (d / "history.csv").read_text() == "epoch\n1\n"


def test_overwrite_moves_the_old_folder_aside(tmp_path: Path) -> None:
    d = tmp_path / "run"
    folders.prepare_run_dir(d, _config())
    (d / "marker.txt").write_text("old run")
    with pytest.warns(UserWarning, match="moved the previous run folder"):
        folders.prepare_run_dir(d, _config(epochs=8), overwrite=True)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and (moved[0] / "marker.txt").read_text() == "old run"
    assert json.loads((d / "config.json").read_text())["epochs"] == 8
    assert not (d / "marker.txt").exists()


def test_folder_without_config_is_not_taken_over(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "something.txt").write_text("x")
    with pytest.raises(folders.RunConfigMismatchError, match="no config.json"):
        folders.prepare_run_dir(d, _config())


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    files.write_json(path, {"auc": 0.5})

    def failing(f):
        f.write('{"auc": 0.9')  # half written
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(path, failing, mode="w")
    assert json.loads(path.read_text()) == {"auc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_atomic_write_names_the_file_and_the_space_left_when_the_disk_is_full(tmp_path: Path) -> None:
    """A file object's write error names no file, and torch.save turns it into a RuntimeError of its zip
    writer: either way the error raised is the operating system's, of the same class, naming the file
    being written (not its temporary file); an error that is not the operating system's is left as it is."""
    path = tmp_path / "metrics.json"
    files.write_json(path, {"auc": 0.5})

    def full(f):
        f.write("x" * 3000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        files.atomic_write(path, full, mode="w")
    assert type(err.value) is OSError and err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert "after 2.9 KiB of it" in str(err.value) and "free there" in str(err.value)

    def denied(f):
        raise RuntimeError("writer failed") from PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError) as err:
        files.atomic_write(path, denied, mode="w")
    assert err.value.filename == str(path) and "free there" not in str(err.value)
    assert json.loads(path.read_text()) == {"auc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    def interrupted(f):
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos")

    with pytest.raises(RuntimeError, match="unexpected pos"):  # an interrupt stays one (provenance names it)
        files.atomic_write(path, interrupted, mode="w")


def _state(epoch: int, h: str = "abc") -> dict:
    return {
        "epoch": epoch,
        "model": {"w": torch.full((3,), float(epoch))},
        "optimizer": {},
        "rng": {},
        "config_hash": h,
    }


def test_checkpoints_keep_the_last_k_and_load_the_newest(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints"
    for e in range(1, 5):
        checkpoints.save_checkpoint(ck, _state(e), keep=2)
    assert sorted(p.name for p in ck.iterdir()) == ["epoch_0003.pt", "epoch_0004.pt", "last.pt"]
    state, path = checkpoints.load_latest_checkpoint(ck, "abc")
    assert state["epoch"] == 4 and path.name == "last.pt"
    assert torch.equal(state["model"]["w"], torch.full((3,), 4.0))
    assert checkpoints.load_latest_checkpoint(tmp_path / "nothing", "abc") is None


def test_truncated_checkpoint_is_detected_not_loaded(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints"
    for e in range(1, 4):
        checkpoints.save_checkpoint(ck, _state(e), keep=3)
    for name in ("last.pt", "epoch_0003.pt"):  # as after a crash mid-copy
        data = (ck / name).read_bytes()
        (ck / name).write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning) as rec:
        state, path = checkpoints.load_latest_checkpoint(ck, "abc")
    assert state["epoch"] == 2 and path.name == "epoch_0002.pt"
    text = " ".join(str(w.message) for w in rec)
    assert "last.pt" in text and "epoch_0003.pt" in text


def test_checkpoint_of_another_config_is_skipped_and_all_bad_raises(tmp_path: Path) -> None:
    ck = tmp_path / "checkpoints"
    checkpoints.save_checkpoint(ck, _state(1, h="other"), keep=0)
    with (
        pytest.warns(UserWarning, match="config hash"),
        pytest.raises(checkpoints.CheckpointError, match="no usable checkpoint"),
    ):
        checkpoints.load_latest_checkpoint(ck, "abc")


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(7)
    checkpoints.seed_everything(3)
    torch.rand(5), np.random.rand(3), random.random(), torch.randperm(10, generator=gen)
    checkpoints.save_checkpoint(
        tmp_path, {"epoch": 1, "model": {}, "optimizer": {}, "rng": checkpoints.rng_state(gen)}, keep=1
    )
    expected = (
        torch.rand(4),
        np.random.rand(4),
        [random.random() for _ in range(4)],
        torch.randperm(10, generator=gen),
    )
    checkpoints.seed_everything(99)
    gen2 = torch.Generator().manual_seed(0)
    state, _ = checkpoints.load_latest_checkpoint(tmp_path)
    checkpoints.set_rng_state(state["rng"], gen2)
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], torch.randperm(10, generator=gen2))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_provenance_records_versions_and_sessions_without_hostname(tmp_path: Path) -> None:
    provenance.update_provenance(
        tmp_path, {"started": "t1", "ended": "t2", "wall_seconds": 2.0}, **provenance.provenance(5, "cpu", False)
    )
    provenance.update_provenance(tmp_path, {"started": "t3", "ended": "t4", "wall_seconds": 3.5})
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["seed"] == 5 and prov["pretrained"] is False
    for pkg in ("python", "torch", "torchvision", "numpy", "scikit-learn", "pytorch-msssim"):
        assert prov["versions"][pkg]
    assert [s["started"] for s in prov["sessions"]] == ["t1", "t3"]
    assert prov["wall_seconds"] == pytest.approx(5.5) and prov["started"] == "t1" and prov["ended"] == "t4"
    host = socket.gethostname()
    if len(host) >= 4:
        assert host not in (tmp_path / "provenance.json").read_text()


def test_recorded_arguments_hold_no_absolute_path(tmp_path: Path) -> None:
    """What a benchmark records of its command: file names for absolute paths, relative paths as given."""
    import argparse

    args = argparse.Namespace(
        json=tmp_path / "out.json",
        from_json=[str(tmp_path / "a.json"), "benchmarks/results/b.json"],
        authors_code=Path("../PIADE"),
        seconds=12,
        device="cuda",
        data_root=str(tmp_path),
    )
    recorded = provenance.recorded_args(args, omit=("data_root",))
    assert recorded == {
        "json": "out.json",
        "from_json": ["a.json", "benchmarks/results/b.json"],
        "authors_code": "../PIADE",
        "seconds": 12,
        "device": "cuda",
    }
    assert str(tmp_path) not in json.dumps(recorded)


def test_git_info_dirty_ignores_results_but_not_code(tmp_path):
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "init")
    assert provenance.git_info(tmp_path)["dirty"] is False
    (tmp_path / "results" / "table.csv").write_text("b\n")  # outputs being regenerated
    assert provenance.git_info(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_info(tmp_path)["dirty"] is True


def test_sessions_started_within_one_second_are_both_kept(tmp_path):
    first, second = provenance.new_session(status="a"), provenance.new_session(status="b")
    second["started"] = first["started"]  # same second
    provenance.update_provenance(tmp_path, first)
    provenance.update_provenance(tmp_path, second)
    first["status"] = "a-ended"
    provenance.update_provenance(tmp_path, first)  # updating a session replaces its own entry only
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert [s["status"] for s in prov["sessions"]] == ["b", "a-ended"]
