"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and on a shared CPU a second thread
    waiting for a descheduled partner makes steps up to 50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
