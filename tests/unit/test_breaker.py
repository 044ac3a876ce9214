"""The circuit breaker as pure logic: a hand-moved clock, no network, no wall time."""

from __future__ import annotations

import threading

import pytest

from edge.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def test_opens_after_n_consecutive_failures_only(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=5, clock=clock)
    _fail(breaker, 2)
    breaker.record_success()  # not consecutive any more
    _fail(breaker, 2)
    assert breaker.state == CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.opened == 1


def test_no_probe_before_the_cooldown_and_exactly_one_after(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 4.999
    assert not breaker.begin_probe() and breaker.state == OPEN
    clock.now += 0.001
    assert breaker.begin_probe()
    assert breaker.state == HALF_OPEN and not breaker.allow()  # offloading waits for the health check
    assert not breaker.begin_probe()  # one probe per cool-down


def test_a_successful_probe_closes_it_and_resets_the_count(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=1, clock=clock)
    _fail(breaker, 2)
    clock.now += 1
    assert breaker.begin_probe()
    breaker.probe_result(True)
    assert breaker.state == CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state == CLOSED  # the count started again from zero


def test_a_failed_probe_opens_it_for_a_new_cooldown(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=2, clock=clock)
    breaker.record_failure()
    clock.now += 2
    assert breaker.begin_probe()
    breaker.probe_result(False)
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now += 1.5
    assert not breaker.begin_probe()  # the cool-down restarted at the failed probe
    clock.now += 0.5
    assert breaker.begin_probe()


def test_late_outcomes_of_requests_sent_before_it_opened_change_nothing(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    breaker.record_success()  # a reply to a request sent earlier: the breaker stays open
    assert breaker.state == OPEN
    clock.now += 1
    assert breaker.begin_probe()
    breaker.record_failure()  # neither does a late failure decide the half-open state
    assert breaker.state == HALF_OPEN
    breaker.probe_result(True)
    assert breaker.state == CLOSED
    breaker.probe_result(False)  # a result with no probe running is ignored
    assert breaker.state == CLOSED


def test_concurrent_callers_get_one_probe(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=0, clock=clock)
    breaker.record_failure()
    granted: list[bool] = []
    threads = [threading.Thread(target=lambda: granted.append(breaker.begin_probe())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"failures": 0}, "failures"), ({"failures": 1.5}, "failures"), ({"cooldown_s": -1}, "cooldown_s")],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
