"""run_all.sh refuses what it cannot run, before training anything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """./run_all.sh with this interpreter's environment active (so env.sh sets up nothing), an empty
    data root, an empty torch cache and results under tmp_path unless overridden."""
    base = dict(os.environ)
    base.update(
        {
            "VIRTUAL_ENV": sys.prefix,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PIADE_DATA": str(tmp_path / "no_data"),
            "PIADE_RESULTS": str(tmp_path / "results"),
            "TORCH_HOME": str(tmp_path / "torch_home"),
            "PIADE_NO_DOWNLOAD": "1",
        }
    )
    base.update(env)
    return subprocess.run(
        [str(ROOT / "run_all.sh"), *args], cwd=tmp_path, env=base, capture_output=True, text=True, timeout=300
    )


def test_unknown_profile_exits_2_listing_the_valid_ones(tmp_path):
    r = _run(["no_such_profile"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown profile 'no_such_profile'" in r.stderr
    for name in ("quick", "paper", "smoke"):
        assert name in r.stderr
    assert not (tmp_path / "results").exists()


def test_too_many_arguments_is_a_usage_error(tmp_path):
    r = _run(["quick", "paper"], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr


def test_paper_profile_stops_before_training_and_says_what_is_missing(tmp_path):
    r = _run(["paper"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode not in (0, 2), out
    # which datasets, where they were looked for, where to get them, how to point at them
    for needle in (
        "cifar10",
        "mvtec",
        "coil100",
        "mnist",
        "fashion_mnist",
        "cifar-10-python.tar.gz",
        "mvtec_anomaly_detection.tar.xz",
        "coil-100.zip",
        "PIADE_DATA",
        str(tmp_path / "no_data"),
    ):
        assert needle in out, f"{needle!r} missing from the message:\n{out}"
    # which weight files, in which folder
    for needle in ("resnet18-f37072fd.pth", "vgg11-8a719046.pth", str(tmp_path / "torch_home")):
        assert needle in out, f"{needle!r} missing from the message:\n{out}"
    assert "stopped before training" in r.stderr
    assert not (tmp_path / "results").exists(), "nothing may be created before the data check passes"


def test_a_profile_file_with_missing_data_is_refused(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "defaults": {"pretrained": False, "epochs": 1},
                "sections": {"table3": {"dataset": "mvtec", "classes": ["bottle"]}},
            }
        )
    )
    r = _run([str(profile)], tmp_path, PIADE_DATA=str(tmp_path / "empty_data"))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "mvtec" in out and "bottle" in out and str(tmp_path / "empty_data") in out
    assert "ImageNet" not in out  # pretrained: false asks for no weights
    assert not (tmp_path / "results").exists()
    assert not list(tmp_path.rglob("runs"))


def test_a_bad_preset_override_is_refused_within_a_minute_before_anything_trains(tmp_path):
    profile = tmp_path / "bad_override.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "name": "bad_override",
                "defaults": {"pretrained": False, "steps": 2},
                "sections": {
                    "table2": {"dataset": "digits", "classes": ["0"]},
                    "extra": {"dataset": "digits", "classes": ["1"], "preset_overrides": {"decode_vector": "longst"}},
                },
            }
        )
    )
    start = time.monotonic()
    r = _run([str(profile)], tmp_path)
    elapsed = time.monotonic() - start
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert (
        "sections.extra: preset_overrides: decode_vector='longst' is not one of first_train_longest_eval, "
        "longest, first"
    ) in r.stderr
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()
    assert not list(tmp_path.rglob("runs"))


def test_a_second_run_all_on_the_same_results_stops_at_once_naming_the_first(tmp_path):
    """One ./run_all.sh per results root (flock): a second one would find the first one's runs busy, fail
    them, and overwrite its rendered notebooks."""
    import fcntl

    results = tmp_path / "results"
    results.mkdir()
    lock = results / ".run_all.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write_text("./run_all.sh smoke, pid 4242, since 2026-11-24T00:00:00Z\n")
        r = _run(["smoke"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"another ./run_all.sh is writing {results} (./run_all.sh smoke, pid 4242, since 2026-11-24T00:00:00Z)"
        in r.stderr
    )
    assert "PIADE_RESULTS" in r.stderr and "Traceback" not in r.stderr
    assert not list((results / "notebooks").iterdir()) and not (results / "runs").exists()


def _sigint_default() -> None:
    """In the child before it becomes run_all.sh: SIGINT back to its default. A test process started in
    the background (``./.ci/run &``) inherits SIGINT ignored, and bash cannot trap a signal that was
    ignored when it started: the script would never see the interrupt these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted_smoke_run(tmp_path: Path, interrupt) -> tuple[int, str]:
    """``./run_all.sh smoke`` in its own process group (as a terminal's foreground job), ``interrupt(pid)``
    called as the first notebook starts; its exit status and stderr."""
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PIADE_RESULTS": str(tmp_path / "results"),
    }
    p = subprocess.Popen(
        [str(ROOT / "run_all.sh"), "smoke"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_sigint_default,
    )
    try:
        for line in p.stdout:
            if "[1/" in line:  # the first notebook is starting
                interrupt(p.pid)
                break
        _, err = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, err


def test_an_interrupt_the_notebook_never_saw_still_stops_the_run_after_it(tmp_path):
    """An interrupt that reaches run_all.sh but not the notebook (SIGINT to the script alone) lets that
    notebook finish, then stops with exit 130 and says how to go on, instead of running the others."""
    code, err = _interrupted_smoke_run(tmp_path, lambda pid: os.kill(pid, signal.SIGINT))
    assert code == 130, err
    assert "[piade] interrupted in 01_data_preparation.ipynb; run ./run_all.sh smoke again to go on" in err
    assert [f.name for f in (tmp_path / "results" / "notebooks").iterdir()] == ["01_data_preparation.ipynb"]


def test_ctrl_c_says_how_to_go_on_with_exit_130(tmp_path):
    """Ctrl-C reaches the whole foreground process group: papermill stops the notebook, and run_all.sh says
    that running it again goes on where it stopped (not "notebook failed")."""

    def ctrl_c(pid: int) -> None:
        time.sleep(2)
        os.killpg(pid, signal.SIGINT)

    code, err = _interrupted_smoke_run(tmp_path, ctrl_c)
    assert code == 130, err
    assert re.search(r"\[piade\] interrupted in 0\d_\w+\.ipynb; run ./run_all.sh smoke again to go on", err), err
    assert "failed" not in err.splitlines()[-1]
