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
    assert "./run_tests.sh" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "./run_all.sh quick" in readme and "./run_tests.sh" in readme


def test_no_data_weights_or_checkpoints_are_tracked():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        return
    bad = [f for f in files if f.endswith((".pt", ".pth", ".ckpt", ".tar.xz", ".tar.gz", ".zip"))
           or f.startswith("data/")]
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
