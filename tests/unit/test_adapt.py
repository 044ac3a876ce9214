"""The link estimator and the hysteresis band, on numbers worked out by hand."""

from __future__ import annotations

import pytest

from edge.adapt import LinkEstimator, outside_band, worth_switching
from edge.planner import CostModel, Network, SplitCost, WireCost, candidates, plan


def test_rtt_is_an_ewma_of_the_probes() -> None:
    est = LinkEstimator(Network(8e6, 100.0), alpha=0.5)
    est.observe_rtt(20.0)  # 100 + 0.5 * (20 - 100) = 60
    est.observe_rtt(20.0)  # 60 + 0.5 * (20 - 60) = 40
    assert est.network.rtt_ms == pytest.approx(40.0)


def test_bandwidth_comes_from_transfer_time_beyond_the_rtt() -> None:
    est = LinkEstimator(Network(8e6, 10.0), alpha=1.0)  # 8 Mbit/s: 0.001 ms per byte
    est.observe_transfer(10_000, 10.0 + 80.0)  # 80 ms for 10 kB beyond the RTT: 1 Mbit/s
    assert est.network.bandwidth_bps == pytest.approx(1e6)
    assert est.samples == 1


def test_a_drop_converges_geometrically() -> None:
    est = LinkEstimator(Network(18.9e6, 20.0), alpha=0.3)
    per_byte_3g = 8e3 / 1.1e6
    for _ in range(10):
        est.observe_transfer(8000, 20.0 + 8000 * per_byte_3g)
    # The gap to the new value shrinks by (1 - alpha) per sample: 0.7 ** 10 = 2.8% of it is left.
    gap = abs(8e3 / est.network.bandwidth_bps - per_byte_3g) / abs(8e3 / 18.9e6 - per_byte_3g)
    assert gap == pytest.approx(0.7**10, rel=1e-6)


def test_a_small_payload_counts_in_proportion_to_its_size() -> None:
    est = LinkEstimator(Network(8e6, 10.0), alpha=1.0, full_weight_bytes=4096)  # 0.001 ms per byte
    est.observe_transfer(64, 10.0 + 1.0)  # 1 ms of jitter over 64 B would read as 0.5 Mbit/s
    # weight 64 / 4096: 0.001 + (1/64) * (1/64 - 0.001) ms per byte
    assert 8e3 / est.network.bandwidth_bps == pytest.approx(0.001 + (64 / 4096) * (1 / 64 - 0.001))
    assert est.network.bandwidth_bps > 5e6  # still near 8 Mbit/s, not 0.5


def test_empty_payloads_and_bad_alpha() -> None:
    est = LinkEstimator(Network(1e6, 5.0))
    est.observe_transfer(0, 50.0)
    assert est.samples == 0
    with pytest.raises(ValueError, match="alpha"):
        LinkEstimator(Network(1e6, 5.0), alpha=0)


@pytest.mark.parametrize(
    ("now", "outside"),
    [
        (Network(10e6, 20.0), False),
        (Network(12.9e6, 20.0), False),  # +29%: inside a 30% band
        (Network(13.1e6, 20.0), True),  # +31%
        (Network(7.8e6, 20.0), False),  # 10 / 7.8 = 1.28
        (Network(7.6e6, 20.0), True),  # 10 / 7.6 = 1.32
        (Network(10e6, 26.9), False),  # 0.3 * 20 + 1 = 7 ms of slack
        (Network(10e6, 27.1), True),
    ],
)
def test_hysteresis_band(now: Network, outside: bool) -> None:
    assert outside_band(Network(10e6, 20.0), now, 0.3) is outside


def _costs() -> CostModel:
    """Two segments of 1 ms; split 0 offloads 4000 B (fp32) or 3800 B (fp16), the tail costs 0.5 ms."""
    wire = {"fp32": WireCost(4000, 0.0, 0.0, 0.9), "fp16": WireCost(3800, 0.0, 0.0, 0.9)}
    return CostModel(
        segment_ms=(1.0, 1.0),
        exits=(),
        splits=(SplitCost(0, cloud_ms=0.5, wire=wire), SplitCost(2, wire={})),
        accuracy_full=0.9,
        response_bytes=0,
    )


def test_a_clearly_faster_plan_is_worth_switching_to_a_near_equal_one_is_not() -> None:
    costs = _costs()
    slow, fast = Network(8e6, 10.0), Network(8e9, 0.1)
    on_edge = plan(costs, slow)
    assert (on_edge.split, on_edge.latency_ms) == (2, 2.0)
    offload = plan(costs, fast)  # 0.1 ms RTT + 0.004 ms transfer + 0.5 ms tail = 0.604 ms by hand
    assert offload.split == 0 and offload.latency_ms == pytest.approx(0.6038, abs=1e-4)
    assert worth_switching(costs, fast, on_edge, offload, min_gain=0.1)
    assert not worth_switching(costs, fast, on_edge, on_edge, min_gain=0.1)
    # fp32 vs fp16 on an 8 Mbit/s link: 14.5 ms vs 14.3 ms (200 B = 0.2 ms): a 1.4% gain, below a 10% band
    fp32 = next(c for c in candidates(costs, slow) if c.codec == "fp32")
    fp16 = next(c for c in candidates(costs, slow) if c.codec == "fp16")
    assert (fp32.latency_ms, fp16.latency_ms) == (pytest.approx(14.5), pytest.approx(14.3))
    assert not worth_switching(costs, slow, fp32, fp16, min_gain=0.1)
    assert worth_switching(costs, slow, fp32, fp16, min_gain=0.01)
