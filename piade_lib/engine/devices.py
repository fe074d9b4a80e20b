"""The devices this machine has, as runs name them (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``): one list
for the command line's ``--device`` and for a profile's pre-flight check."""

from __future__ import annotations


def available_devices() -> list[str]:
    """auto, cpu, cuda and cuda:N when torch sees CUDA devices, mps when available."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def torch_note() -> str:
    """The torch version, and that it sees no CUDA device when it sees none (why a GPU is missing)."""
    import torch

    return f"torch {torch.__version__}" + ("" if torch.cuda.is_available() else ", no CUDA device")
