"""engine/cpu_allocator.py: the malloc settings that keep large CPU tensors in the heap between training
steps. Checked by what glibc does with a 64 MiB tensor (mallinfo2: bytes in mmapped blocks), not by the
module's own bookkeeping; the process's previous setting is restored after each test."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from piade_lib.engine import cpu_allocator
from piade_lib.engine.trainer import Trainer
from piade_lib.experiments import preflight
from piade_lib.model.losses import PiadeLoss
from piade_lib.model.network import build_model

ROOT = Path(__file__).resolve().parent.parent
BIG = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB), below the tuned one (1 GiB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mmapped_bytes() -> int:
    libc = cpu_allocator._libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def _mmapped_while_holding(nbytes: int) -> int:
    """Bytes glibc serves by mmap while a tensor of ``nbytes`` is alive, minus those before it."""
    before = _mmapped_bytes()
    t = torch.empty(nbytes, dtype=torch.uint8)
    during = _mmapped_bytes()
    del t
    return during - before


@pytest.fixture
def restore_policy():
    before = cpu_allocator.current()
    yield
    if before is not None:
        cpu_allocator.set_policy(before)


def test_tuned_keeps_large_tensors_in_the_heap_and_default_maps_them() -> None:
    """In a fresh process (the heap of this one depends on which tests ran before: glibc maps a block only
    when its free lists cannot serve it)."""
    if not cpu_allocator.available():
        pytest.skip("glibc only")
    _mmapped_bytes()  # skips without mallinfo2
    child = f"""
import json, sys
sys.path[:0] = {sys.path!r}
import tests.test_cpu_allocator as t
from piade_lib.engine import cpu_allocator
out = {{}}
with cpu_allocator.policy("default"):
    out["default"] = [t._mmapped_while_holding(t.BIG) for _ in range(2)]
    with cpu_allocator.policy("tuned"):
        out["tuned"] = [t._mmapped_while_holding(t.BIG) for _ in range(2)]
    out["after"] = cpu_allocator.current()
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(n >= BIG for n in out["default"])  # glibc's behaviour: a fresh mapping per large tensor, each time
    assert out["tuned"][1] < BIG  # the first one grows the heap, the next one reuses it: no mapping
    assert out["after"] == "default"  # the previous policy is back


def test_the_environment_chooses_and_a_wrong_value_is_named(monkeypatch, restore_policy) -> None:
    monkeypatch.delenv(cpu_allocator.ENV_VAR, raising=False)
    assert cpu_allocator.requested() == "tuned"
    monkeypatch.setenv(cpu_allocator.ENV_VAR, " Default ")
    assert cpu_allocator.requested() == "default"
    if cpu_allocator.available():
        cpu_allocator.set_policy("default")
        assert cpu_allocator.tune() is False and cpu_allocator.current() == "default"  # left alone
    monkeypatch.setenv(cpu_allocator.ENV_VAR, "jemalloc")
    message = r"\$PIADE_CPU_ALLOCATOR: unknown setting 'jemalloc'; valid: tuned, default"
    with pytest.raises(cpu_allocator.AllocatorSettingError, match=message):
        cpu_allocator.tune()
    assert any("PIADE_CPU_ALLOCATOR: unknown setting 'jemalloc'" in p for p in preflight.check_profile("smoke"))
    with pytest.raises(cpu_allocator.AllocatorSettingError, match="allocator policy 'fast'; valid: tuned, default"):
        cpu_allocator.set_policy("fast")


def test_a_cpu_trainer_tunes_the_allocator(monkeypatch, restore_policy) -> None:
    if not cpu_allocator.available():
        pytest.skip("glibc only")
    monkeypatch.delenv(cpu_allocator.ENV_VAR, raising=False)
    cpu_allocator.set_policy("default")
    model = build_model("paper", image_size=32, n_vectors=2)
    Trainer(
        model,
        PiadeLoss("paper"),
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        lr=1e-3,
        weight_decay=0.0,
        batch_size=2,
        seed=0,
    )
    assert cpu_allocator.current() == "tuned"
    assert _mmapped_while_holding(BIG) < BIG or _mmapped_while_holding(BIG) < BIG
