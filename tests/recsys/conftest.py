"""Shared recsys test setup."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """recsys test models and graphs are tiny: one thread is faster than two on the 2-core CI machine
    and immune to other processes contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
