"""The planner on a cost model small enough to work out by hand (numbers in the comments)."""

from __future__ import annotations

import pytest

from edge.energy import RadioModel
from edge.planner import (
    CostModel,
    Energy,
    ExitCost,
    Network,
    SplitCost,
    WireCost,
    best_accuracy_within,
    candidates,
    expected_energy_mj,
    expected_latency_ms,
    plan,
    tensor_routes,
)

# Three segments of 2, 3 and 5 ms on the edge; exit0 after segment 0 answers 60% of samples, exit1 after
# segment 1 another 20%; each exit head costs 0.5 ms. At 8 Mbit/s one byte takes exactly 0.001 ms.
COSTS = CostModel(
    segment_ms=(2.0, 3.0, 5.0),
    exits=(
        ExitCost("exit0", 0, 0.5, {1: 0.6, 2: 0.6, 3: 0.6}),
        ExitCost("exit1", 1, 0.5, {2: 0.2, 3: 0.2}),
    ),
    splits=(
        SplitCost(0, cloud_ms=1.0, wire={"fp32": WireCost(3136, 0.0, 0.0, 0.90)}),
        SplitCost(
            1,
            cloud_ms=0.8,
            wire={
                "fp32": WireCost(8000, 0.0, 0.0, 0.90, 0.897),
                "int8": WireCost(2005, 0.1, 0.05, 0.899, 0.896),
            },
        ),
        SplitCost(2, cloud_ms=0.4, wire={"fp32": WireCost(4000, 0.0, 0.0, 0.90, 0.895)}),
        SplitCost(3, accuracy_exits=0.895),
    ),
    accuracy_full=0.90,
    response_bytes=0.0,
)
SLOW = Network(8e6, 20.0)


@pytest.mark.parametrize(
    ("split", "codec", "exits", "expected"),
    [
        (3, "-", False, 10.0),  # 2 + 3 + 5
        (3, "-", True, 4.9),  # 0.6 * 2.5 + 0.2 * (2.5 + 3.5) + 0.2 * (6 + 5)
        (0, "fp32", False, 24.136),  # 20 rtt + 3.136 transfer + 1 cloud
        (1, "fp32", True, 14.02),  # 0.6 * 2.5 + 0.4 * (2.5 + 20 + 8 + 0.8)
        (1, "int8", True, 11.682),  # 0.6 * 2.5 + 0.4 * (2.5 + 0.1 + 20 + 2.005 + 0.05 + 0.8)
        (2, "fp32", False, 29.4),  # 5 + 20 + 4 + 0.4
    ],
)
def test_expected_latency_by_hand(split: int, codec: str, exits: bool, expected: float) -> None:
    latency, _, _ = expected_latency_ms(COSTS, SLOW, split, codec, exits)
    assert latency == pytest.approx(expected, abs=1e-9)


def test_the_per_offload_overhead_weighs_on_the_offloaded_share_only() -> None:
    loaded = Network(8e6, 20.0, overhead_ms=5.0)
    assert expected_latency_ms(COSTS, loaded, 3, "-", True)[0] == pytest.approx(4.9)  # nothing offloaded
    assert expected_latency_ms(COSTS, loaded, 0, "fp32", False)[0] == pytest.approx(24.136 + 5.0)
    assert expected_latency_ms(COSTS, loaded, 1, "fp32", True)[0] == pytest.approx(14.02 + 0.4 * 5.0)
    with pytest.raises(ValueError, match="overhead_ms must be >= 0"):
        Network(8e6, 20.0, overhead_ms=-1.0)


def test_exit_and_offload_fractions() -> None:
    _, exited, offloaded = expected_latency_ms(COSTS, SLOW, 2, "fp32", True)
    assert (exited, offloaded) == pytest.approx((0.8, 0.2))
    _, exited, offloaded = expected_latency_ms(COSTS, SLOW, 1, "fp32", True)
    assert (exited, offloaded) == pytest.approx((0.6, 0.4))  # exit1 sits at the split: never reached


def test_slow_network_keeps_the_work_on_the_edge() -> None:
    best = plan(COSTS, SLOW, budget=0.01)
    assert (best.split, best.exits, best.latency_ms) == (3, True, pytest.approx(4.9))


def test_fast_network_sends_the_raw_input() -> None:
    fast = Network(1e9, 1.0)
    best = plan(COSTS, fast, budget=0.01)
    # cloud only: 1 + 3136 * 8 / 1e9 s + 1 = 2.025 ms; the best edge option (exits) is 4.9 ms.
    assert (best.split, best.codec, best.exits) == (0, "fp32", False)
    assert best.latency_ms == pytest.approx(2.025088)


def test_a_tight_budget_rules_out_the_lossy_configurations() -> None:
    best = plan(COSTS, SLOW, budget=0.0)
    # Only 0.90-accurate candidates remain: edge only without exits (10 ms) beats every offload.
    assert (best.split, best.exits, best.accuracy) == (3, False, 0.90)


def test_every_candidate_is_listed_fastest_first() -> None:
    listed = candidates(COSTS, SLOW)
    assert [c.latency_ms for c in listed] == sorted(c.latency_ms for c in listed)
    # split 0 has no exit before it, so no "exits" variant; split 1 has two codecs x exits on/off.
    labels = {(c.split, c.codec, c.exits) for c in listed}
    assert (0, "fp32", True) not in labels
    assert {(1, "fp32", False), (1, "fp32", True), (1, "int8", False), (1, "int8", True)} <= labels
    assert len(listed) == 1 + 4 + 2 + 2


def test_the_dual_best_accuracy_under_a_latency_target() -> None:
    assert best_accuracy_within(COSTS, SLOW, 5.0).label == "split 3, -, exits"
    assert best_accuracy_within(COSTS, SLOW, 10.0).label == "split 3, -, no exits"
    with pytest.raises(ValueError, match=r"fastest is split 3, -, exits at 4.90 ms"):
        best_accuracy_within(COSTS, SLOW, 1.0)


def test_unknown_split_and_bad_network_are_refused() -> None:
    with pytest.raises(ValueError, match=r"profiled split points: \[0, 1, 2, 3\]"):
        expected_latency_ms(COSTS, SLOW, 7, "fp32", False)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        Network(0, 10)


# Energy: 2 W of compute (2 mJ per ms) and a radio of 0.01 mJ per byte plus 100 mJ per transfer.
ENERGY = Energy(2.0, RadioModel("test", 0.01, 100.0, "hand-made"))


@pytest.mark.parametrize(
    ("split", "codec", "exits", "expected"),
    [
        (3, "-", False, 20.0),  # 2 W x (2 + 3 + 5) ms, nothing sent
        (3, "-", True, 9.8),  # 2 W x 4.9 ms expected on the edge (the exits' worked latency above)
        (0, "fp32", False, 131.36),  # no edge compute; the radio: 0.01 x 3136 + 100
        # edge: exit0 0.6 x 2.5 + exit1 0.2 x 6 + the offloaded 0.2 x (6 + 0.1 encode) = 3.92 ms -> 7.84 mJ;
        # radio 0.2 x (0.01 x 2005 + 100) = 24.01
        (2, "int8", True, 31.85),
    ],
)
def test_expected_energy_is_worked_out_by_hand(split: int, codec: str, exits: bool, expected: float) -> None:
    costs = COSTS
    if split == 2:  # give split 2 an int8 codec with an encode cost, to count encode as edge compute
        splits = list(COSTS.splits)
        splits[2] = SplitCost(2, cloud_ms=0.4, wire={"int8": WireCost(2005, 0.1, 0.05, 0.899, 0.896)})
        costs = CostModel(COSTS.segment_ms, COSTS.exits, tuple(splits), 0.90, 0.0)
    assert expected_energy_mj(costs, ENERGY, split, codec, exits) == pytest.approx(expected)


def test_the_reply_bytes_cost_radio_energy_too() -> None:
    costs = CostModel((1.0,), (), (SplitCost(0, wire={"fp32": WireCost(100, 0.0, 0.0, 0.9)}), SplitCost(1)), 0.9, 50)
    assert expected_energy_mj(costs, ENERGY, 0, "fp32", False) == pytest.approx(0.01 * 150 + 100)


def test_the_energy_objective_picks_least_mj_within_the_budget() -> None:
    fast = Network(8e9, 0.0)  # offloading at split 0 is the fastest (about 1 ms) but costs the radio 131 mJ
    by_latency = plan(COSTS, fast, 0.01, objective="latency", energy=ENERGY)
    assert (by_latency.split, by_latency.codec) == (0, "fp32")
    by_energy = plan(COSTS, fast, 0.01, objective="energy", energy=ENERGY)
    assert (by_energy.split, by_energy.exits, by_energy.energy_mj) == (3, True, pytest.approx(9.8))
    # a free radio: the least energy is to compute nothing on the device
    free = Energy(2.0, RadioModel("free", 0.0, 0.0, "-"))
    assert plan(COSTS, fast, 0.01, objective="energy", energy=free).split == 0
    assert all(c.energy_mj is not None for c in candidates(COSTS, fast, ENERGY))
    assert all(c.energy_mj is None for c in candidates(COSTS, fast))


def test_the_energy_objective_needs_an_energy_model_and_a_known_objective() -> None:
    with pytest.raises(ValueError, match="needs an Energy"):
        plan(COSTS, SLOW, objective="energy")
    with pytest.raises(ValueError, match="valid: latency, energy"):
        plan(COSTS, SLOW, objective="speed")
    with pytest.raises(ValueError, match="compute power must be > 0 W"):
        Energy(0.0, ENERGY.radio)


# An image bundle: the edge preprocesses a frame in 4 ms before any route, except jpeg90 at split 0, which encodes
# the frame (1 ms, 1000 bytes) and leaves the decoding and preprocessing to the cloud (0.5 ms).
IMAGES = CostModel(
    segment_ms=(2.0, 3.0, 5.0),
    exits=(),
    splits=(
        SplitCost(
            0,
            cloud_ms=1.0,
            wire={
                "fp32": WireCost(3136, 0.0, 0.0, 0.90),
                "jpeg90": WireCost(1000, 1.0, 0.5, 0.895, from_frame=True),
            },
        ),
        SplitCost(3),
    ),
    accuracy_full=0.90,
    response_bytes=0,
    preprocess_ms=4.0,
)


def test_tensor_routes_leave_out_the_routes_that_send_the_frame() -> None:
    tensors = tensor_routes(IMAGES)
    assert [(c.split, c.codec) for c in candidates(tensors, Network(8e6, 10.0))] == [(3, "-"), (0, "fp32")]
    assert IMAGES.splits[0].wire.keys() == {"fp32", "jpeg90"}  # the original is untouched


def test_an_image_codec_skips_the_edges_preprocessing_and_pays_its_encode() -> None:
    net = Network(8e6, 10.0)
    # jpeg90: encode 1 + rtt 10 + 1000 bytes 1 + decode 0.5 (the cloud's preprocessing in it) + tail 1; the edge
    # does not preprocess
    assert expected_latency_ms(IMAGES, net, 0, "jpeg90", False)[0] == pytest.approx(13.5)
    # fp32 at split 0: preprocess 4 + rtt 10 + 3136 bytes 3.136 + tail 1
    assert expected_latency_ms(IMAGES, net, 0, "fp32", False)[0] == pytest.approx(18.136)
    # edge only: preprocess 4 + 10 ms of segments
    assert expected_latency_ms(IMAGES, net, 3, "-", False)[0] == pytest.approx(14.0)
    listed = candidates(IMAGES, net)
    assert [(c.split, c.codec) for c in listed] == [(0, "jpeg90"), (3, "-"), (0, "fp32")]
    assert plan(IMAGES, net, budget=0.01).codec == "jpeg90"
    assert plan(IMAGES, net, budget=0.001).split == 3  # jpeg's half a point is over a 0.1-point budget
