"""COIL-100 (GPND-style protocol) on a few tiny obj*.png files plus the archive's .pl file."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from data_fixtures import make_zip, write_coil

from piade_lib.data import (
    SOURCES,
    ChecksumMismatchError,
    DatasetNotFoundError,
    IncompleteDatasetWarning,
    classes,
    coil100,
    one_class_task,
)

# the tiny folders below are incomplete on purpose; the warning itself is tested in its own test
pytestmark = pytest.mark.filterwarnings("ignore::piade_lib.data.IncompleteDatasetWarning")


@pytest.fixture
def coil_root(tmp_path):
    write_coil(tmp_path / "coil-100", n_objects=5, n_views=10)
    return tmp_path


def test_gpnd_split_sizes_labels_and_ids(coil_root):
    task = one_class_task("coil100", "obj3", root=coil_root)
    assert classes("coil100")[2] == "obj3" and len(classes("coil100")) == 100
    # floor(0.8 * 10) = 8 train views, 2 held-out views, 2 outliers (outlier_fraction 0.5)
    assert len(task.train) == 8 and len(task.test) == 4 and task.test.labels == [0, 0, 1, 1]
    assert all(i.startswith("obj3__") for i in task.train.ids + task.test.ids[:2])
    assert all(not i.startswith("obj3__") for i in task.test.ids[2:])
    assert not set(task.train.ids) & set(task.test.ids)
    assert sorted(task.train.ids + task.test.ids[:2]) == sorted(f"obj3__{5 * v}" for v in range(10))
    assert task.test[3]["image"].shape == (3, 120, 120)
    assert task.manifest["source"]["layout"] == "<root>/coil-100" and task.manifest["source"]["n_views"] == 10
    assert task.manifest["warnings"]  # 5 objects x 10 views is not the full dataset, and says so


def test_gpnd_outlier_fraction_and_train_fraction(coil_root):
    task = one_class_task("coil100", 0, root=coil_root, train_fraction=0.6, outlier_fraction=0.2)
    assert len(task.train) == 6  # floor(0.6 * 10)
    assert task.manifest["n_test_normal"] == 4 and task.manifest["n_test_anomalous"] == 1  # 1 / 5 = 0.2


def test_gpnd_seed_determinism(coil_root):
    a = one_class_task("coil100", "obj1", root=coil_root, seed=5).manifest
    b = one_class_task("coil100", "obj1", root=coil_root, seed=5).manifest
    c = one_class_task("coil100", "obj1", root=coil_root, seed=6).manifest
    assert a == b and (a["train_ids"], a["test_ids"]) != (c["train_ids"], c["test_ids"])


def test_files_directly_in_root_and_non_images_skipped(tmp_path):
    write_coil(tmp_path, n_objects=2, n_views=5)
    task = one_class_task("coil100", "obj2", root=tmp_path)
    assert task.manifest["source"]["layout"] == "<root>"
    assert len(task.train) + task.manifest["n_test_normal"] == 5


def test_missing_coil_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        one_class_task("coil100", "obj1", root=tmp_path)
    src = SOURCES["coil100"]
    assert src.url in str(e.value) and src.sha256 in str(e.value) and "130,688,843" in str(e.value)


def test_download_checks_size_and_sha256_then_extracts(tmp_path, monkeypatch, serve_dir):
    write_coil(tmp_path / "src", n_objects=3, n_views=5)
    (tmp_path / "srv").mkdir()
    archive = make_zip(tmp_path / "srv" / "coil-100.zip", tmp_path / "src", "coil-100")
    base = serve_dir(archive.parent)
    good = dataclasses.replace(
        SOURCES["coil100"],
        url=f"{base}/coil-100.zip",
        mirrors=(),
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        size=archive.stat().st_size,
    )
    # wrong size: refused, the download is kept as .part for inspection
    monkeypatch.setitem(SOURCES, "coil100", dataclasses.replace(good, size=good.size + 1))
    with pytest.raises(ChecksumMismatchError) as e:
        one_class_task("coil100", "obj1", root=tmp_path / "data", download=True)
    assert f"{good.size + 1} bytes" in str(e.value) and f"{good.size} bytes" in str(e.value)
    assert (tmp_path / "data" / "coil-100.zip.part").is_file()
    monkeypatch.setitem(SOURCES, "coil100", good)
    task = one_class_task("coil100", "obj1", root=tmp_path / "data2", download=True)
    assert len(task.train) == 4 and (tmp_path / "data2" / "coil-100" / "convertGroupppm2png.pl").is_file()


@pytest.mark.filterwarnings("default")
def test_incomplete_coil_is_reported_on_the_console_once_per_task(tmp_path, monkeypatch):
    import warnings

    write_coil(tmp_path / "coil-100", n_objects=2, n_views=5)
    with pytest.warns(IncompleteDatasetWarning) as rec:
        task = one_class_task("coil100", "obj1", root=tmp_path)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "found 2 of 100 objects and 10 of 7,200 images" in msg and "2 object(s) without all 72 views" in msg
    assert str(tmp_path / "coil-100") in msg and f"piade download coil100 --root {tmp_path}" in msg
    assert rec[0].filename == __file__  # points at the caller's line
    assert task.manifest["warnings"] == [msg]
    # a complete folder (here: what the published set would be if it had 2 objects of 5 views) warns nothing
    monkeypatch.setattr(coil100, "CLASSES", ("obj1", "obj2"))
    monkeypatch.setattr(coil100, "N_VIEWS", 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one_class_task("coil100", "obj1", root=tmp_path).manifest["warnings"] == []
