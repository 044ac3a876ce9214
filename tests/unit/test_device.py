"""The emulated slow device: every run takes ``slowdown`` times its time on the host (injected clock)."""

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
    """Takes ``cost`` seconds of the fake clock per run."""

    def __init__(self, clock: _Clock, cost: float) -> None:
        self.clock, self.cost, self.feeds = clock, cost, []

    def run(self, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        self.feeds.append(input_feed)
        self.clock.now += self.cost
        return ["out"]

    def get_inputs(self) -> list[str]:
        return ["x"]


@pytest.mark.parametrize("slowdown", [1.0, 2.5, 10.0])
def test_a_run_takes_slowdown_times_its_host_time(slowdown: float) -> None:
    clock = _Clock()
    inner = _Session(clock, 0.002)
    session = SlowSession(inner, slowdown, clock=clock, sleep=clock.sleep)
    start = clock.now
    assert session.run(None, {"x": 1}) == ["out"]
    assert clock.now - start >= 0.002 * slowdown - 1e-12
    assert clock.now - start <= 0.002 * slowdown + 1e-9 + 0.4 * 0.002 * slowdown  # at most one short wake over
    assert inner.feeds == [{"x": 1}] and session.get_inputs() == ["x"]
    assert (len(clock.sleeps) > 0) == (slowdown > 1)


def test_slowdown_one_is_the_session_itself() -> None:
    inner = _Session(_Clock(), 0.001)
    assert slowed(inner, 1) is inner
    assert isinstance(slowed(inner, 3), SlowSession)


@pytest.mark.parametrize("slowdown", [0.5, 0.0, float("nan"), float("inf")])
def test_a_device_faster_than_the_host_is_refused(slowdown: float) -> None:
    with pytest.raises(ValueError, match="slowdown is a factor >= 1"):
        SlowSession(_Session(_Clock(), 0.001), slowdown)
