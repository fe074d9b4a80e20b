"""glibc's malloc settings for training on the CPU: keep large tensors in the heap instead of giving
them back to the kernel after every use.

PyTorch's CPU allocator is the C library's ``malloc``. glibc serves every block above its mmap
threshold (128 KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and returns it with
``munmap`` on free, so each of the many large activations of a training step (e.g. the 110 MB VGG
features of the perceptual term at 120x120, batch 60) is faulted in page by page, and zeroed by the
kernel, again at every step. Measured on a 2-core AVX-512 CPU: a 27.6 M-element multiplication takes
50 ms into fresh memory and 10 ms into reused memory, and a whole training step is 1.3x faster with
the settings below (``benchmarks/bench_vs_authors.py`` measures it side by side). CUDA has a caching
allocator for the same reason; these settings are the glibc equivalent (PyTorch's CPU performance
guides recommend jemalloc or tcmalloc for it, which would need an ``LD_PRELOAD``).

:func:`tune` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB with ``mallopt``, so
that freed blocks stay in the process and are reused by the next step. The numbers are unchanged (the
same operations on the same values); the process keeps its peak memory until it exits. It is a
setting of the whole process, applied by the :class:`~piade_lib.engine.trainer.Trainer` when it trains
on the CPU, once; ``PIADE_CPU_ALLOCATOR=default`` leaves glibc's defaults alone. On other C
libraries (macOS, Windows, musl) nothing is changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
from collections.abc import Iterator

import torch

ENV_VAR = "PIADE_CPU_ALLOCATOR"
CHOICES = ("tuned", "default")
M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
TUNED = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 2**31 - 1}  # mallopt takes a C int
# glibc's own rule, left alone, raises the mmap threshold to the size of each freed mmapped block, up to
# 32 MiB, and the trim threshold to twice that: a training loop, which frees large blocks at every step,
# settles at these values within its first step; "default" sets them directly (the dynamic rule cannot be
# switched back on once a threshold has been set)
GLIBC_DEFAULTS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}

_current: str | None = None  # what this module last set: None (nothing), "tuned" or "default"


class AllocatorSettingError(ValueError):
    pass


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, or None on any other C library."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def available() -> bool:
    """Whether this process's C library is glibc (the only one whose settings are changed)."""
    return _libc() is not None


def requested() -> str:
    """The setting ``$PIADE_CPU_ALLOCATOR`` asks for: "tuned" (the default) or "default"."""
    value = os.environ.get(ENV_VAR, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise AllocatorSettingError(
            f"${ENV_VAR}: unknown setting {value!r}; valid: {', '.join(CHOICES)} "
            "(tuned keeps large blocks in the heap; default leaves glibc's malloc as it is)"
        )
    return value


def _apply(settings: dict[int, int]) -> bool:
    libc = _libc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in settings.items())


def set_policy(policy: str) -> bool:
    """Set the ``"tuned"`` thresholds or glibc's ``"default"`` ones (those its dynamic rule settles at in a
    training loop, see ``GLIBC_DEFAULTS``). True when applied."""
    global _current
    if policy not in CHOICES:
        raise AllocatorSettingError(f"allocator policy {policy!r}; valid: {', '.join(CHOICES)}")
    if _current == policy:
        return True
    applied = _apply(TUNED if policy == "tuned" else GLIBC_DEFAULTS)
    if applied:
        _current = policy
    return applied


def tune(device: torch.device | str = "cpu") -> bool:
    """For work on ``device``: on the CPU, apply what ``$PIADE_CPU_ALLOCATOR`` asks for (tuned unless
    "default"), once per process; True when the tuned thresholds are in effect. Other devices, and
    "default", touch nothing."""
    if torch.device(device).type != "cpu" or requested() == "default":
        return False
    return set_policy("tuned")


def current() -> str | None:
    """What this module last set ("tuned" or "default"), or None when it never changed anything."""
    return _current


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """Run a block under one policy and restore the previous one (benchmarks compare both in one process)."""
    before = _current
    set_policy(name)
    try:
        yield
    finally:
        set_policy(before or "default")
