"""The emulated slow device: every run takes ``slowdown`` times its median time on the host (injected clock)."""

from __future__ import annotations

from typing import Any

import pytest

from edge.device import SlowSession, slowed


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds * 0.6  # sleep may wake early: the session must wait again for the rest


class _Session:
    """Takes ``costs[i]`` seconds of the fake clock on its i-th run (the last one from then on)."""

    def __init__(self, clock: _Clock, *costs: float) -> None:
        self.clock, self.costs, self.feeds = clock, list(costs), []

    def run(self, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        self.feeds.append(input_feed)
        self.clock.now += self.costs[min(len(self.feeds), len(self.costs)) - 1]
        return ["out"]

    def get_inputs(self) -> list[str]:
        return ["x"]


@pytest.mark.parametrize("slowdown", [1.0, 2.5, 10.0])
def test_a_run_takes_slowdown_times_the_median_host_time(slowdown: float) -> None:
    clock = _Clock()
    inner = _Session(clock, 0.009, 0.002, 0.002, 0.003, 0.002)  # a slow first run, then 2 ms, one 3 ms outlier
    session = SlowSession(inner, slowdown, clock=clock, sleep=clock.sleep, calibration_runs=5)
    for _ in range(3):
        start = clock.now
        assert session.run(None, {"x": 1}) == ["out"]
        if session.device_s is not None and len(inner.feeds) > 6:
            assert clock.now - start == pytest.approx(0.002 * slowdown)  # the median, scaled; no noise
    assert session.device_s == pytest.approx(0.002 * slowdown)
    assert len(inner.feeds) == 5 + 3 and inner.feeds[-1] == {"x": 1} and session.get_inputs() == ["x"]


def test_a_host_hiccup_is_not_scaled() -> None:
    clock = _Clock()
    inner = _Session(clock, *[0.001] * 6, 0.05, 0.001)  # the 7th run (the 2nd call) hiccups for 50 ms
    session = SlowSession(inner, 10, clock=clock, sleep=clock.sleep, calibration_runs=5)
    session.run(None, {"x": 1})
    start = clock.now
    session.run(None, {"x": 1})
    assert clock.now - start == pytest.approx(0.05)  # the hiccup itself, not 10 x 50 ms
    start = clock.now
    session.run(None, {"x": 1})
    assert clock.now - start == pytest.approx(0.01)


def test_slowdown_one_is_the_session_itself() -> None:
    inner = _Session(_Clock(), 0.001)
    assert slowed(inner, 1) is inner
    assert isinstance(slowed(inner, 3), SlowSession)


@pytest.mark.parametrize("slowdown", [0.5, 0.0, float("nan"), float("inf")])
def test_a_device_faster_than_the_host_is_refused(slowdown: float) -> None:
    with pytest.raises(ValueError, match="slowdown is a factor >= 1"):
        SlowSession(_Session(_Clock(), 0.001), slowdown)
