"""Suite-wide rules: tests marked ``gpu`` run only where CUDA is available."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One torch thread for the duration of a test (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models run many small ops, for which one thread is faster than two on the 2-core CI machine and
    immune to other processes contending for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
