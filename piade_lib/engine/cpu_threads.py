"""The number of CPU threads a run computes with, as one setting of the run.

On a CPU, torch splits convolutions and reductions over its intra-op threads, and the split decides
the order in which floating-point sums are added: the same run trained with 1 and with 2 threads
drifts apart by float rounding, and over hundreds of optimiser steps that moves the AUROCs (measured
with the quick profile: digit 3, 0.963 with 2 threads against 0.997 with 1). By default a run uses
what its process has: every core under the local executor, the CPUs a Ray task asked for under Ray
(Ray sets ``OMP_NUM_THREADS``). A run config's ``threads`` pins the count instead, so that the local
and the Ray executor, or machines with more or fewer cores, compute the same numbers. The Ray
executor then asks for at least that many CPUs per run, so that pinned threads never share a core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def check(threads: int | None) -> int | None:
    """``threads`` as an int >= 1, or None; ValueError naming the value otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 (CPU threads per run) or null, got {threads!r}")
    return threads


@contextlib.contextmanager
def pinned(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` torch intra-op threads (None: leave the process's count), then restore
    the previous count. Yields the count in effect."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield before
        return
    torch.set_num_threads(int(threads))
    try:
        yield int(threads)
    finally:
        torch.set_num_threads(before)
