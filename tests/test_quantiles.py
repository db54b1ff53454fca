"""protocol/quantiles.py: the one percentile (type 7, known answers in
tests/test_bench_harness.py, which the benches' re-export runs), and the SFU node's stats use it."""

from __future__ import annotations

import pytest

from protocol.quantiles import percentile
from sfu.node import SfuNode


def test_the_sfu_node_reports_processing_time_percentiles_by_interpolation() -> None:
    node = SfuNode()
    node._processing_ns.extend([4_000_000, 1_000_000, 3_000_000, 2_000_000])  # 1..4 ms
    processing = node.stats()["processing_ms"]
    # The median of an even sample is the mean of the middle two (index int(q * n) gave 3
    # ms), and p99 of four values is not the maximum.
    assert processing["p50"] == pytest.approx(2.5)
    assert processing["p99"] == pytest.approx(3.97)
    assert processing["samples"] == 4
    assert processing["p99"] == pytest.approx(percentile([1, 2, 3, 4], 0.99))


def test_no_samples_no_figure() -> None:
    assert SfuNode().stats()["processing_ms"] == {"p50": None, "p99": None, "samples": 0}
