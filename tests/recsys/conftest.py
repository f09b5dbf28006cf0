"""Shared recsys test setup."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def recsys_one_thread(one_thread):
    """recsys test models and graphs are tiny: every recsys test runs on one thread (tests/conftest.py)."""
