"""Fixtures shared by several test modules (helpers that write data files live in data_fixtures.py)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from data_fixtures import QuietHandler

# the tiny PIADE run several modules share (digits class 1, 2 epochs of 2 batches)
TINY = dict(
    dataset="digits",
    normal_class="1",
    epochs=2,
    batch_size=2,
    limit_train=4,
    limit_test=4,
    n_bootstrap=10,
    device="cpu",
    pretrained=False,
    checkpoint_every=1,
    keep_checkpoints=2,
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny PIADE run (deterministic algorithms, one thread), trained once per test
    session; tests that change a run work on :func:`tiny_run_copy`."""
    from piade_lib.engine.config import RunConfig
    from piade_lib.engine.lifecycle import train_run

    previous, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        return train_run(RunConfig(**TINY), tmp_path_factory.mktemp("tiny"), progress=False)
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)


@pytest.fixture
def tiny_run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run in the same layout under ``tmp_path`` (safe to change)."""
    target = tmp_path / tiny_run.relative_to(tiny_run.parents[4])
    shutil.copytree(tiny_run, target)
    return target


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
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (piade)",
                "language": "python",
                "env": {"PYTHONPATH": pythonpath},
                "metadata": {"debugger": True},
            },
            indent=1,
        )
    )
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + ([previous] if previous else []))
    yield "piade"
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous


@pytest.fixture
def serve_dir() -> Iterator[Callable[[Path], str]]:
    """``serve_dir(folder[, handler]) -> "http://127.0.0.1:<port>"``: serves ``folder`` for the test's
    duration (``handler``: a ``SimpleHTTPRequestHandler`` subclass, e.g. one that drops connections)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path, handler: type = QuietHandler) -> str:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()
