"""Benchmark helpers: timing summaries and the resident-memory sampler."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from interplay.core.bench import PeakRSS, rss_bytes, summarize, time_call


def test_summarize_and_time_call():
    stats = summarize([3.0, 1.0, 2.0])
    assert stats["median_s"] == 2.0
    calls = []
    out = time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and out["median_s"] >= 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_peak_rss_sees_a_temporary_allocation_that_is_gone_at_exit():
    size = 64 * 2**20
    with PeakRSS() as mem:
        block = np.ones(size // 8)  # touched pages: resident while alive
        block.sum()
        del block
    assert rss_bytes() > 0
    assert 0.6 * size < mem.peak < 3 * size, mem.peak
    with PeakRSS() as idle:
        pass
    assert idle.peak < 0.25 * size
