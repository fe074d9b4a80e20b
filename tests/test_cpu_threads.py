"""A run's ``threads``: checked, pinned while the run computes and restored after, recorded, and not part of
the run's identity (an execution setting, like the device)."""

from __future__ import annotations

import json

import pytest
import torch

from piade_lib.engine import cpu_threads, folders
from piade_lib.engine.config import BaselineSpec, RunConfig
from piade_lib.engine.lifecycle import evaluate_run, train_run
from tests.conftest import TINY


def test_pinned_sets_the_count_for_the_block_and_restores_it() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with cpu_threads.pinned(other) as n:
        assert n == other == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with cpu_threads.pinned(None) as n:
        assert n == before == torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), cpu_threads.pinned(other):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_bad_thread_count_is_refused_with_the_value(bad) -> None:
    with pytest.raises(ValueError, match=r"threads must be an integer >= 1 .* got " + repr(bad).replace(".", r"\.")):
        RunConfig(**TINY, threads=bad).resolved()
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        BaselineSpec.build("ocsvm", "digits", "1", threads=bad)


def test_threads_is_recorded_but_not_part_of_the_run_identity() -> None:
    pinned = RunConfig(**TINY, threads=1).to_dict()
    assert pinned["threads"] == 1 and RunConfig(**TINY).to_dict()["threads"] is None
    assert folders.config_hash(pinned) == folders.config_hash(RunConfig(**TINY).to_dict())
    # a config.json written before the field existed still loads
    old = {k: v for k, v in RunConfig(**TINY).to_dict().items() if k != "threads"}
    assert RunConfig.from_dict(old).resolved().threads is None


def test_a_run_computes_with_its_pinned_threads_and_the_caller_keeps_its_own(tmp_path) -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    run_dir = train_run(RunConfig(**TINY, threads=other), tmp_path, progress=False)
    assert torch.get_num_threads() == before
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert f"{other} torch threads" in prov["device_name"]
    assert all(f"{other} torch threads" in s["device_name"] for s in prov["sessions"])
    evaluate_run(run_dir, progress=False)  # re-scoring pins the run's count too
    assert torch.get_num_threads() == before
    last = json.loads((run_dir / "provenance.json").read_text())["sessions"][-1]
    assert last["status"] == "evaluated" and f"{other} torch threads" in last["device_name"]
