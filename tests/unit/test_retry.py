"""Retries: the jittered backoff as pure functions, and an offload's tries against a scripted cloud, with a
hand-moved clock (sleeping moves it), a seeded random source and no network."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edge.breaker import OPEN, CircuitBreaker
from edge.client import CloudReply
from edge.errors import CloudError, CloudRejected, CloudUnavailable
from edge.offload import Offload
from edge.retry import RetryPolicy

REPLY = CloudReply(np.zeros((1, 10), np.float32), 100, 5.0, 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeCall:
    """A try in flight whose outcome is an exception or the reply; it takes ``takes_s`` on the clock."""

    def __init__(self, clock: Clock, outcome: Exception | CloudReply, takes_s: float) -> None:
        self.clock, self.outcome, self.bytes_sent = clock, outcome, 100
        self.ends = clock.now + takes_s
        self.cancelled = False

    def done(self) -> bool:
        return self.clock.now >= self.ends

    def result(self) -> CloudReply:
        self.clock.now = max(self.clock.now, self.ends)  # waiting for it takes its time
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class Cloud:
    """Answers tries with the scripted outcomes in order; records each try's timeout."""

    def __init__(self, clock: Clock, outcomes: list[Exception | CloudReply], takes_s: float = 0.01) -> None:
        self.clock, self.outcomes, self.takes_s = clock, list(outcomes), takes_s
        self.timeouts: list[float] = []
        self.calls: list[FakeCall] = []

    def send(self, timeout_s: float) -> FakeCall:
        self.timeouts.append(timeout_s)
        outcome = self.outcomes.pop(0)
        takes = timeout_s if isinstance(outcome, CloudUnavailable) and outcome.reason == "deadline" else self.takes_s
        self.calls.append(FakeCall(self.clock, outcome, takes))
        return self.calls[-1]


def _down() -> CloudUnavailable:
    return CloudUnavailable("UNAVAILABLE", "unavailable")


def _offload(
    cloud: Cloud, clock: Clock, deadline: float = 1.0, breaker: CircuitBreaker | None = None, **kwargs: float
) -> Offload:
    breaker = breaker or CircuitBreaker(failures=10, clock=clock)
    policy = RetryPolicy(**kwargs)  # type: ignore[arg-type]
    return Offload(
        cloud.send, deadline, breaker=breaker, retry=policy, rng=random.Random(7), clock=clock, sleep=clock.sleep
    )


# --- the policy --------------------------------------------------------------------------------------------------


def test_backoff_grows_by_the_factor_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(base_ms=10, factor=3, max_ms=200, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff_s(n, rng) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.01, 0.03, 0.09, 0.2, 0.2])


def test_jitter_stays_within_its_fraction_and_actually_varies() -> None:
    policy = RetryPolicy(base_ms=100, factor=2, max_ms=1000, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.backoff_s(2, rng) for _ in range(200)]
    assert all(0.1 <= d <= 0.2 for d in delays)
    assert max(delays) - min(delays) > 0.05  # not one value: edges that failed together spread out


def test_no_retry_when_the_attempts_are_used_up_or_the_deadline_is_too_close() -> None:
    policy = RetryPolicy(attempts=3, base_ms=50, jitter=0.0, min_attempt_ms=20)
    rng = random.Random(0)
    assert policy.delay_s(1, remaining_s=1.0, rng=rng) == pytest.approx(0.05)
    assert policy.delay_s(3, remaining_s=1.0, rng=rng) is None
    assert policy.delay_s(1, remaining_s=0.069, rng=rng) is None  # 50 ms backoff + 20 ms try > 69 ms
    assert policy.delay_s(1, remaining_s=0.071, rng=rng) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"attempts": 0}, "attempts"),
        ({"base_ms": -1}, "base_ms"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_ms": float("nan")}, "max_ms"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- an offload's tries --------------------------------------------------------------------------------------------


def test_transient_failures_are_retried_after_a_backoff_until_the_reply() -> None:
    clock = Clock()
    cloud = Cloud(clock, [_down(), CloudUnavailable("RESOURCE_EXHAUSTED", "overloaded"), REPLY])
    offload = _offload(cloud, clock, attempts=3, base_ms=20, factor=2, jitter=0.0)
    assert offload.wait() is REPLY
    assert offload.attempts == 3 and offload.bytes_sent == 300
    assert clock.slept == pytest.approx([0.0, 0.02, 0.04])  # no wait before the first try
    assert cloud.timeouts[0] == pytest.approx(1.0)  # each try gets the time left before the deadline
    assert cloud.timeouts[2] == pytest.approx(1.0 - 0.02 - 0.04 - 2 * 0.01)


def test_an_overloaded_clouds_retry_hint_is_honoured_and_a_hint_past_the_deadline_means_answer_now() -> None:
    clock = Clock()
    hinted = CloudUnavailable("RESOURCE_EXHAUSTED", "overloaded", retry_after_s=0.15)
    cloud = Cloud(clock, [hinted, REPLY])
    assert _offload(cloud, clock, attempts=3, base_ms=20, jitter=0.0).wait() is REPLY
    assert clock.slept == pytest.approx([0.0, 0.15])  # the hint, not the 20 ms backoff
    clock = Clock()
    cloud = Cloud(clock, [CloudUnavailable("RESOURCE_EXHAUSTED", "overloaded", retry_after_s=5.0), REPLY])
    with pytest.raises(CloudUnavailable):
        _offload(cloud, clock, deadline=1.0, attempts=3, base_ms=20, jitter=0.0).wait()
    assert len(cloud.calls) == 1 and clock.now < 0.1  # no waiting out a queue that drains after the deadline


def test_a_rejection_is_not_retried_and_counts_as_the_cloud_being_up() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, clock=clock)
    cloud = Cloud(clock, [_down(), CloudRejected("FAILED_PRECONDITION: other bundle"), REPLY])
    offload = _offload(cloud, clock, breaker=breaker, attempts=5, jitter=0.0)
    with pytest.raises(CloudRejected):
        offload.wait()
    assert offload.attempts == 2
    breaker.record_failure()
    assert breaker.allow()  # the rejection reset the consecutive failures


def test_no_retry_once_the_deadline_leaves_no_room() -> None:
    clock = Clock()
    cloud = Cloud(clock, [CloudUnavailable("DEADLINE_EXCEEDED", "deadline"), REPLY])
    offload = _offload(cloud, clock, deadline=0.3, attempts=5)
    with pytest.raises(CloudError) as info:
        offload.wait()
    assert info.value.reason == "deadline"
    assert offload.attempts == 1 and clock.now == pytest.approx(0.3)


def test_no_first_try_without_time_left() -> None:
    clock = Clock()
    clock.now = 0.995
    offload = _offload(Cloud(clock, [REPLY]), clock, deadline=1.0, min_attempt_ms=20)
    with pytest.raises(CloudError) as info:
        offload.wait()
    assert info.value.reason == "deadline" and offload.attempts == 0


def test_retries_stop_when_the_breaker_opens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, clock=clock)
    cloud = Cloud(clock, [_down(), _down(), REPLY])
    offload = _offload(cloud, clock, breaker=breaker, attempts=5, jitter=0.0)
    with pytest.raises(CloudUnavailable):
        offload.wait()
    assert offload.attempts == 2 and breaker.state == OPEN


def test_poll_never_blocks_and_sends_the_retry_once_its_backoff_is_over() -> None:
    clock = Clock()
    cloud = Cloud(clock, [_down(), REPLY], takes_s=0.05)
    offload = _offload(cloud, clock, attempts=2, base_ms=30, jitter=0.0)
    assert offload.poll() is None and offload.attempts == 1  # sent, in flight
    clock.now = 0.05
    assert offload.poll() is None  # failed: a 30 ms backoff starts
    clock.now = 0.07
    assert offload.poll() is None and offload.attempts == 1
    clock.now = 0.08
    assert offload.poll() is None and offload.attempts == 2  # the retry went out
    clock.now = 0.13
    assert offload.poll() is REPLY
    assert clock.slept == []


def test_cancel_stops_the_try_in_flight_and_any_retry() -> None:
    clock = Clock()
    cloud = Cloud(clock, [REPLY, REPLY], takes_s=0.5)
    offload = _offload(cloud, clock)
    assert offload.poll() is None
    offload.cancel()
    assert cloud.calls[0].cancelled
    clock.now = 1.0
    assert offload.poll() is None and offload.attempts == 1
