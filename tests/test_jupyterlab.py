"""JupyterLab works out of the box: a real ``jupyter lab`` server on localhost lists the notebooks and
runs ``01_data_preparation`` in a ``piade`` kernel it started, with the smoke profile.

How: the server runs as a subprocess (``python -m jupyterlab``, bound to 127.0.0.1, a free port, a
random token, its runtime/config/settings folders in a temporary folder). The test talks to it only
through its REST API, as the JupyterLab front end does: ``/api/contents`` lists ``notebooks/`` and
returns the notebook, ``/api/kernelspecs`` offers ``piade``, and ``POST /api/sessions`` opens the
notebook with the kernel its metadata names. The cells are then sent one by one as
``execute_request`` messages over that kernel's websocket (``/api/kernels/<id>/channels``, the
JSON wire protocol; ``websocket-client`` is a dependency of jupyter_server), and the replies and
outputs are collected from the shell and iopub messages. The parameters are injected the way
papermill does (its ``parameterize_notebook``): profile ``smoke``, results under a temporary folder.
The server is stopped in all cases.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from piade_lib.experiments import profiles

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_data_preparation"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``jupyter lab`` subprocess and a tiny client of its REST API."""

    def __init__(self, tmp: Path) -> None:
        self.token = secrets.token_hex(16)
        self.runtime = tmp / "runtime"
        self.log_path = tmp / "server.log"
        env = dict(
            os.environ,
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={_free_port()}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={ROOT}",
            "--ServerApp.open_browser=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.base = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the server answers /api/status; its URL comes from its runtime file (the port it bound)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with status {self.proc.returncode}:\n{self.log()}")
            for info in self.runtime.glob(f"jpserver-{self.proc.pid}.json"):
                try:
                    port = json.loads(info.read_text())["port"]
                except (ValueError, KeyError, OSError):
                    continue
                self.base = f"http://127.0.0.1:{port}"
                try:
                    self.api("GET", "/api/status")
                    return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log()}")

    def api(self, method: str, path: str, body: dict | None = None) -> dict | list | None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()


def _execute(ws, code: str, timeout: float) -> tuple[str, list[dict]]:
    """Send one execute_request over the kernel's websocket; return the reply status and the iopub outputs."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": ws.session,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "buffers": [],
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    status, idle, outputs = None, False, []
    deadline = time.monotonic() + timeout
    while status is None or not idle:
        ws.settimeout(max(1.0, deadline - time.monotonic()))
        raw = ws.recv()
        if time.monotonic() > deadline:
            raise TimeoutError(f"cell did not finish within {timeout:.0f} s:\n{code}")
        if isinstance(raw, bytes):  # binary frames carry buffers (widgets); nothing this test reads
            continue
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg.get("msg_type") or msg["header"]["msg_type"]
        if msg.get("channel") == "shell" and kind == "execute_reply":
            status = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append({"msg_type": kind, **msg["content"]})
    return status, outputs


@pytest.mark.slow
def test_jupyterlab_lists_the_notebooks_and_runs_01_in_the_piade_kernel(tmp_path, piade_kernel):
    websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    server = Server(tmp_path)
    session = None
    try:
        server.wait_ready()
        listing = server.api("GET", "/api/contents/notebooks")
        names = sorted(e["name"] for e in listing["content"] if e["type"] == "notebook")
        assert names == [f"{n}.ipynb" for n in profiles.NOTEBOOKS]

        model = server.api("GET", f"/api/contents/notebooks/{NOTEBOOK}.ipynb")
        nb = nbformat.from_dict(model["content"])
        kernel_name = nb.metadata.kernelspec.name
        assert kernel_name == piade_kernel
        assert piade_kernel in server.api("GET", "/api/kernelspecs")["kernelspecs"]

        # what JupyterLab does when the notebook is opened: a session with the kernel its metadata names
        session = server.api(
            "POST",
            "/api/sessions",
            {
                "path": f"notebooks/{NOTEBOOK}.ipynb",
                "type": "notebook",
                "name": f"{NOTEBOOK}.ipynb",
                "kernel": {"name": kernel_name},
            },
        )
        kernel_id = session["kernel"]["id"]
        params = profiles.notebook_parameters("smoke", NOTEBOOK, results_root=str(tmp_path / "results"))
        served = tmp_path / f"{NOTEBOOK}.served.ipynb"  # the notebook as the server sent it
        nbformat.write(nb, served)
        nb = parameterize_notebook(load_notebook_node(str(served)), params, kernel_name=kernel_name, language="python")

        ws = websocket.create_connection(
            server.base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {server.token}"],
            timeout=60,
        )
        ws.session = uuid.uuid4().hex
        try:
            results = []
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                status, outputs = _execute(ws, cell.source, timeout=300)
                results.append((cell.source, status, outputs))
            _, where = _execute(ws, "import piade_lib; print(piade_lib.__file__)", timeout=60)
        finally:
            ws.close()
    finally:
        if session is not None:
            try:
                server.api("DELETE", f"/api/sessions/{session['id']}")
            except (urllib.error.URLError, OSError):
                pass
        server.stop()
    assert server.proc.poll() is not None

    assert results, "no code cell was run"
    assert "".join(o.get("text", "") for o in where).strip() == str(ROOT / "piade_lib" / "__init__.py")
    for source, status, outputs in results:
        errors = [o for o in outputs if o["msg_type"] == "error"]
        assert status == "ok" and not errors, f"cell failed:\n{source}\n{errors}"
        stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
        assert "Traceback" not in stderr and "IProgress not found" not in stderr, stderr
    images = [o for _, _, outs in results for o in outs if "image/png" in o.get("data", {})]
    assert images, f"{NOTEBOOK} showed no figure"
