"""The project's set-up files agree with each other."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; on 3.10 these checks are skipped

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    wanted = {_name(r): r.strip() for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {_name(r): r.strip() for r in pip_section if not r.startswith("-")}
    assert listed == wanted, "environment.yml's pip section and pyproject.toml list different requirements"
    assert "-e .[dev]" in pip_section


def test_python_floor_agrees():
    assert _pyproject()["project"]["requires-python"] == ">=3.10"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python>=3.10" in env["dependencies"]


def test_console_script_points_at_an_existing_function():
    from piade_lib import cli

    target = _pyproject()["project"]["scripts"]["piade"]
    module, func = target.split(":")
    assert module == "piade_lib.cli" and callable(getattr(cli, func))


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in ci
    assert "./scripts/lint.sh" in ci and ci.index("./scripts/lint.sh") < ci.index("./run_tests.sh")  # lint first
    readme = (ROOT / "README.md").read_text()
    assert "./run_all.sh quick" in readme and "./run_tests.sh" in readme


def test_no_data_weights_or_checkpoints_are_tracked():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        return
    bad = [
        f for f in files if f.endswith((".pt", ".pth", ".ckpt", ".tar.xz", ".tar.gz", ".zip")) or f.startswith("data/")
    ]
    assert not bad, f"data, weights or checkpoints tracked in git: {bad}"
    big = [f for f in files if (ROOT / f).is_file() and (ROOT / f).stat().st_size > 5 * 2**20]
    assert not big, f"tracked files over 5 MB: {big}"


def test_the_notebooks_the_set_up_and_run_all_name_the_same_kernel():
    """JupyterLab and papermill start the kernel the set-up installs (scripts/env.sh)."""
    import json

    env_sh = (ROOT / "scripts" / "env.sh").read_text()
    assert 'ipykernel install --sys-prefix --name piade --display-name "Python (piade)"' in env_sh
    assert "--kernel piade" in (ROOT / "run_all.sh").read_text()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec == {"display_name": "Python (piade)", "language": "python", "name": "piade"}, path.name
    names = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert {"ipykernel", "ipywidgets", "jupyterlab", "papermill"} <= names  # widgets: tqdm's bars render as widgets


LOCK = ROOT / "locks" / "requirements.lock"


def _lock_pins() -> dict[str, str]:
    from piade_lib.engine.lockfile import read_pins

    return read_pins(LOCK)


def test_the_lock_pins_every_dependency_of_pyproject_exactly():
    project = _pyproject()["project"]
    pins = _lock_pins()
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert wanted - set(pins) == set(), "dependencies of pyproject.toml missing from locks/requirements.lock"
    lines = [ln for ln in LOCK.read_text().splitlines() if ln and not ln.startswith((" ", "#", "-"))]
    assert lines and all(re.match(r"^[a-z0-9][a-z0-9._-]*==\S+", ln) for ln in lines), "every pin is name==version"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the pair this project is tested with


def test_the_lock_says_how_to_regenerate_it():
    header = LOCK.read_text().split("\n\n")[0]
    assert "bash scripts/lock.sh" in header and "uv pip compile pyproject.toml --extra dev" in header
    script = (ROOT / "scripts" / "lock.sh").read_text()
    assert "locks/constraints.in" in script and "--output-file" in script


def test_env_sh_installs_from_the_lock_and_its_stamp_covers_it():
    env_sh = (ROOT / "scripts" / "env.sh").read_text()
    assert 'lock="$root/locks/requirements.lock"' in env_sh
    assert 'pip install -q -r "$lock"' in env_sh
    assert 'pip install -q --no-deps -e "$root[dev]"' in env_sh
    assert "PIADE_UNLOCKED" in env_sh
    stamp = next(ln for ln in env_sh.splitlines() if ln.strip().startswith("want="))
    assert "pyproject.toml" in stamp and "$lock" in stamp


def _write_lock(path: Path, lines: list[str]) -> Path:
    path.write_text("# a test lock\n" + "\n".join(lines) + "\n")
    return path


def test_lock_info_reports_matching_and_mismatching_pins(tmp_path):
    import hashlib
    from importlib import metadata

    from piade_lib.engine.lockfile import lock_info

    pytest_version = metadata.version("pytest")
    pins = [
        f"PyTest=={pytest_version} \\",
        "    --hash=sha256:" + "0" * 64,
        "    # via piade-lib (pyproject.toml)",
        "pyyaml==0.0.1",
        "surely-not-installed-dist==1.0",
        'pywin32==306 ; sys_platform == "win32"',  # marker false here: not counted
    ]
    lock = _write_lock(tmp_path / "requirements.lock", pins)
    info = lock_info(lock, root=tmp_path)
    assert info["file"] == "requirements.lock"
    assert info["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert info["n_pinned"] == 3 and info["installed_matches"] is False and info["n_mismatches"] == 2
    assert info["mismatches"] == [
        f"pyyaml: locked 0.0.1, installed {metadata.version('pyyaml')}",
        "surely-not-installed-dist: locked 1.0, installed none",
    ]
    matching = lock_info(_write_lock(tmp_path / "ok.lock", [f"pytest=={pytest_version}"]), root=tmp_path)
    assert matching["installed_matches"] is True and matching["mismatches"] == []


def test_lock_info_caps_the_mismatch_list(tmp_path):
    from piade_lib.engine.lockfile import MAX_MISMATCHES, lock_info

    lock = _write_lock(tmp_path / "many.lock", [f"not-installed-{i}==1.0" for i in range(MAX_MISMATCHES + 5)])
    info = lock_info(lock, root=tmp_path)
    assert len(info["mismatches"]) == MAX_MISMATCHES and info["n_mismatches"] == MAX_MISMATCHES + 5


def test_lock_info_is_all_none_without_a_lock_file(tmp_path):
    from piade_lib.engine.lockfile import lock_info

    info = lock_info(root=tmp_path)  # e.g. an installed wheel: no locks/ beside piade_lib
    assert set(info) >= {"file", "sha256", "installed_matches", "mismatches"}
    assert all(v is None for v in info.values())


def test_lock_info_of_this_checkout_names_the_committed_lock():
    from piade_lib.engine.lockfile import lock_info

    info = lock_info()
    assert info["file"] == "locks/requirements.lock" and len(info["sha256"]) == 64
    assert isinstance(info["installed_matches"], bool) and info["n_pinned"] == len(_lock_pins())


def test_the_lint_script_runs_ruff_check_and_format_check_and_ruff_is_configured():
    lint = (ROOT / "scripts" / "lint.sh").read_text()
    assert "source scripts/env.sh" in lint and "set -euo pipefail" in lint
    assert '"$PY" -m ruff check .' in lint and '"$PY" -m ruff format --check .' in lint
    ruff = _pyproject()["tool"]["ruff"]
    assert ruff["line-length"] == 120 and ruff["target-version"] == "py310"
    assert {"E", "F", "W", "I", "B", "UP"} <= set(ruff["lint"]["select"])
    assert "ruff" in {_name(r) for r in _pyproject()["project"]["optional-dependencies"]["dev"]}


def test_git_tracks_no_weights_checkpoints_or_per_machine_files() -> None:
    """Weights, checkpoints and the run folders' lock files (which name the host) never go in git,
    and .gitignore keeps new ones out."""
    import shutil

    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    banned = re.compile(r"\.(pt|pth|ckpt)$|(^|/)\.[^/]*\.lock(\.holder\.json)?$")
    assert [p for p in tracked if banned.search(p)] == []
    samples = [
        "results/mnist/runs/mnist-lsa/7/.paper-v2.lock",
        "results/mnist/runs/mnist-lsa/7/.paper-v2.lock.holder.json",
        "results/mnist/runs/mnist-lsa/7/paper-v2/checkpoints/final.pt",
    ]
    ignored = subprocess.run([git, "check-ignore", "--no-index", *samples], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == samples
