"""A run's ``compile`` setting: which ``torch.compile`` mode its training step uses (no torch import, so
the command line can offer the modes without loading torch).

The trainer (:class:`~piade_lib.engine.trainer.Trainer`) compiles the forward pass and the loss as one
graph, on CUDA only: on a 2-core CPU compiling took 37-99 s and gained under 1 % of the median step
(paper preset, 32x32, batch 120), while on an H100 ``reduce-overhead`` (CUDA graphs) doubled a 32x32
run (benchmarks/README.md). Like the device, it is an execution setting: recorded with the run, not part of
its identity, since it changes float rounding, not what is trained.
"""

from __future__ import annotations

# torch.compile's modes (a run's ``compile``); "reduce-overhead" replays the training step as CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str | None:
    """The torch.compile mode a run's ``compile`` setting asks for: None for no compilation (False, None,
    "none"), "default" for True, else one of :data:`COMPILE_MODES`. Raises ValueError naming the valid values."""
    if value is None or value is False or value == "none":
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(f"compile must be false, true or a mode of {list(COMPILE_MODES)}, got {value!r}")
