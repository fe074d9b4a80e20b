"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and on a shared CPU a second thread
    waiting for a descheduled partner makes steps up to 50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def piade_kernel(tmp_path_factory):
    """The Jupyter kernel ``piade`` (the notebooks' kernelspec), pointing at the Python running the tests.

    ``scripts/env.sh`` installs the real one into the environment it sets up; here a kernelspec of the
    same name is written to a temporary folder put first on ``JUPYTER_PATH``, so the notebook tests run
    the checked-out ``piade_lib`` with this interpreter whatever environment is active (and whatever
    ``piade`` kernel a user-level Jupyter folder may hold). Returns the kernel name.
    """
    import json
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path_factory.mktemp("jupyter_path")
    spec = folder / "kernels" / "piade"
    spec.mkdir(parents=True)
    pythonpath = os.pathsep.join([str(root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (piade)", "language": "python", "env": {"PYTHONPATH": pythonpath},
        "metadata": {"debugger": True},
    }, indent=1))
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + ([previous] if previous else []))
    yield "piade"
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous
