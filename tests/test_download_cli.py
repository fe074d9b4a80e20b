"""``piade download NAME [--root DIR]``: offline it fails at once with one line naming the URLs, files and
checksums (no traceback); an interrupted or corrupted download never passes as complete; from a
local HTTP server serving archives in the real formats it downloads, checks and unpacks; files
placed by hand are checked and unpacked without network; ``run_all.sh paper``'s refusal names the
command for each missing dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_fixtures import make_zip, write_coil, write_mnist
from torchvision.datasets import MNIST
from torchvision.datasets.utils import calculate_md5

from piade_lib import cli
from piade_lib.data import SOURCES, DatasetNotFoundError, one_class_task
from piade_lib.data.errors import IncompleteDatasetWarning
from piade_lib.experiments import preflight

ROOT = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _offline_env() -> dict[str, str]:
    """Every HTTP(S) request goes through a proxy that refuses connections: offline, even on a machine with
    network access."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(http_proxy=proxy, https_proxy=proxy, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, PYTHONPATH=str(ROOT))
    return env


def test_offline_download_fails_in_seconds_with_one_line_naming_urls_files_and_checksums(tmp_path):
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "piade_lib.cli", "download", "mnist", "--root", str(empty)],
        cwd=tmp_path,
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("piade download: error: cannot download mnist"), proc.stderr
    msg = lines[0]
    for name, md5 in MNIST.resources:
        assert f"{MNIST.mirrors[0]}{name}" in msg and md5 in msg
    assert str(empty / "MNIST" / "raw") in msg and f"piade download mnist --root {empty}" in msg
    assert not [p for p in empty.rglob("*") if p.is_file()], "nothing may be left that looks downloaded"


def test_download_help_explains_every_option():
    text = cli.build_parser()._subparsers._group_actions[0].choices["download"].format_help()
    for part in (
        "NAME",
        "cifar10",
        "mnist",
        "fashion_mnist",
        "mvtec",
        "coil100",
        "--root",
        "$PIADE_DATA",
        "--url",
        ".part",
        "checksum",
    ):
        assert part in text, part


# ------------------------------------------------------------------------------ local "remote" servers
class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``cut`` (bytes) ends every response early while announcing the full length,
    like a dropped connection."""

    cut: int | None = None

    def log_message(self, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001 - http.server's signature
        if self.cut is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(self.cut))
        self.close_connection = True


@pytest.fixture
def dropping_server(serve_dir):
    """``dropping_server(folder, cut)``: serves ``folder``, ending every response after ``cut`` bytes."""

    def start(folder: Path, cut: int) -> str:
        return serve_dir(folder, type("Cut", (_Handler,), {"cut": cut}))

    return start


@pytest.fixture
def coil_archive(tmp_path):
    write_coil(tmp_path / "src", n_objects=3, n_views=5)
    (tmp_path / "srv").mkdir()
    archive = make_zip(tmp_path / "srv" / "coil-100.zip", tmp_path / "src", "coil-100")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_interrupted_or_corrupted_download_never_passes_as_complete(
    tmp_path, monkeypatch, capsys, serve_dir, dropping_server, coil_archive
):
    archive, sha = coil_archive
    dead = f"http://127.0.0.1:{_closed_port()}/coil-100.zip"  # a mirror that is never reached
    good = dataclasses.replace(SOURCES["coil100"], mirrors=(dead,), sha256=sha, size=archive.stat().st_size)
    root = tmp_path / "data"

    # 1. the connection drops half-way through (the server announced the full length)
    monkeypatch.setitem(
        SOURCES,
        "coil100",
        dataclasses.replace(good, url=f"{dropping_server(archive.parent, archive.stat().st_size // 2)}/coil-100.zip"),
    )
    assert cli.main(["download", "coil100", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"size mismatch for {root / 'coil-100.zip.part'}" in err and "Traceback" not in err
    assert f"expected {archive.stat().st_size} bytes, got {archive.stat().st_size // 2} bytes" in err
    assert not (root / "coil-100.zip").exists() and not (root / "coil-100").exists()
    with pytest.raises(DatasetNotFoundError):
        one_class_task("coil100", "obj1", root=root)

    # 2. the host sends a whole file of the right size, but not the published one (corrupted)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF
    (bad_dir / "coil-100.zip").write_bytes(bytes(data))
    monkeypatch.setitem(SOURCES, "coil100", dataclasses.replace(good, url=f"{serve_dir(bad_dir)}/coil-100.zip"))
    assert cli.main(["download", "coil100", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and sha in err and "kept" in err and "Traceback" not in err
    assert (root / "coil-100.zip.part").is_file()  # kept for inspection, under a name no loader reads
    assert not (root / "coil-100.zip").exists() and not (root / "coil-100").exists()
    with pytest.raises(DatasetNotFoundError):
        one_class_task("coil100", "obj1", root=root)

    # 3. the real archive: downloaded (the stale .part replaced), checked, extracted
    monkeypatch.setitem(SOURCES, "coil100", dataclasses.replace(good, url=f"{serve_dir(archive.parent)}/coil-100.zip"))
    assert cli.main(["download", "coil100", "--root", str(root)]) == 0
    assert "coil100: ready in" in capsys.readouterr().out
    assert not (root / "coil-100.zip.part").exists()
    with pytest.warns(IncompleteDatasetWarning, match="found 3 of 100 objects"):  # a small real-format archive
        assert len(one_class_task("coil100", "obj2", root=root).train) == 4


@pytest.fixture
def mnist_remote(tmp_path, monkeypatch):
    """The four MNIST .gz files in the real idx format, with torchvision's table patched to their md5s."""
    srv = tmp_path / "srv"
    write_mnist(srv, gz=True)
    order = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    monkeypatch.setattr(MNIST, "resources", [(n, calculate_md5(str(srv / n))) for n in order])
    return srv


def test_mnist_downloads_from_a_local_server_with_md5_check(
    tmp_path, monkeypatch, capsys, serve_dir, dropping_server, mnist_remote
):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    # an interrupted transfer of the first file: nothing unpacked, no .gz under its final name
    monkeypatch.setattr(MNIST, "mirrors", [f"{dropping_server(mnist_remote, 100)}/"])
    assert cli.main(["download", "mnist", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    first, md5 = MNIST.resources[0]
    assert f"md5 mismatch for {raw / (first + '.part')}: expected {md5}" in err and "Traceback" not in err
    assert [p.name for p in raw.iterdir()] == [first + ".part"]
    with pytest.raises(DatasetNotFoundError):
        one_class_task("mnist", "7", root=root)

    monkeypatch.setattr(MNIST, "mirrors", [f"{serve_dir(mnist_remote)}/"])
    assert cli.main(["download", "mnist", "--root", str(root)]) == 0
    assert f"mnist: ready in {root / 'MNIST'}" in capsys.readouterr().out
    names = sorted(p.name for p in raw.iterdir())
    assert names == sorted([n for n, _ in MNIST.resources] + [n[:-3] for n, _ in MNIST.resources])
    task = one_class_task("mnist", "7", root=root)
    assert len(task.train) == 3 and len(task.test) == 20
    # complete: a second call needs no server
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{_closed_port()}/"])
    assert cli.main(["download", "mnist", "--root", str(root)]) == 0


def test_files_placed_by_hand_are_checked_and_unpacked_offline(tmp_path, monkeypatch, capsys, mnist_remote):
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{_closed_port()}/"])  # offline
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for n, _ in MNIST.resources:
        (raw / n).write_bytes((mnist_remote / n).read_bytes())
    assert cli.main(["download", "mnist", "--root", str(root)]) == 0
    assert len(one_class_task("mnist", "3", root=root).train) == 3
    # a damaged hand-placed file is reported (and kept), not used
    root2 = tmp_path / "data2"
    raw2 = root2 / "MNIST" / "raw"
    raw2.mkdir(parents=True)
    first = MNIST.resources[0][0]
    (raw2 / first).write_bytes((mnist_remote / first).read_bytes()[:-10])
    assert cli.main(["download", "mnist", "--root", str(root2)]) == 2
    err = capsys.readouterr().err
    assert "md5 mismatch" in err and str(raw2 / first) in err
    assert (raw2 / first).is_file() and not (raw2 / first[:-3]).exists()


def test_paper_refusal_names_the_download_command_per_missing_dataset(tmp_path):
    data = tmp_path / "no data here"
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "name: p\n"
        f"defaults: {{pretrained: false, epochs: 1, data_root: '{data}'}}\n"
        "sections:\n"
        "  a: {dataset: mnist, classes: ['0']}\n"
        "  b: {dataset: coil100, classes: [obj1]}\n"
        "  c: {dataset: digits, classes: ['0']}\n"
    )
    problems = preflight.check_profile(profile)
    assert len(problems) == 2
    quoted = f"'{data}'"  # the command is ready to paste: the path is shell-quoted
    assert problems[0].rstrip().endswith(f"download mnist --root {quoted}")
    assert problems[1].rstrip().endswith(f"download coil100 --root {quoted}")
    assert "Fetch it with: " in problems[0]
