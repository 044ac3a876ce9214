"""A circuit breaker: stop sending to a failing cloud for a cool-down, and resume only after a health check.

States: **closed** (offload as usual) → **open** after ``failures`` consecutive transient failures (answer
locally, touch no network) → after ``cooldown_s``, the first caller of :meth:`CircuitBreaker.begin_probe` gets
the one health check of this period and the breaker is **half-open** (still local) → closed when the check
succeeds, open again (a new cool-down) when it fails. Pure logic, thread-safe; the clock is passed in, so tests
move time by hand.

Example:
    >>> now = [0.0]
    >>> breaker = CircuitBreaker(failures=2, cooldown_s=5.0, clock=lambda: now[0])
    >>> breaker.record_failure(); breaker.record_failure(); breaker.state
    'open'
    >>> breaker.allow(), breaker.begin_probe()
    (False, False)
    >>> now[0] = 5.0
    >>> breaker.begin_probe(), breaker.state, breaker.begin_probe()
    (True, 'half_open', False)
    >>> breaker.probe_result(True); breaker.allow()
    True
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Counts consecutive transient failures of the cloud and decides whether a request may go there.

    Args:
        failures: consecutive transient failures that open the breaker.
        cooldown_s: how long it stays open before a health check may close it.
        clock: monotonic seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(self, failures: int = 3, cooldown_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(failures, int) or failures < 1:
            raise ValueError(f"failures must be a whole number >= 1, got {failures!r}")
        if not isinstance(cooldown_s, int | float) or not math.isfinite(cooldown_s) or cooldown_s < 0:
            raise ValueError(f"cooldown_s must be a number of seconds >= 0, got {cooldown_s!r}")
        self.failures, self.cooldown_s = failures, float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self.opened = 0  # times the breaker opened, for the counters

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        return self._state

    def allow(self) -> bool:
        """Whether a request may go to the cloud now (only when closed)."""
        return self._state == CLOSED

    def begin_probe(self) -> bool:
        """``True`` for exactly one caller once the cool-down is over: that caller runs the health check and
        reports it with :meth:`probe_result`. The breaker is half-open meanwhile."""
        with self._lock:
            if self._state != OPEN or self._clock() - self._opened_at < self.cooldown_s:
                return False
            self._state = HALF_OPEN
            return True

    def probe_result(self, ok: bool) -> None:
        """The health check's outcome: close the breaker, or open it for another cool-down."""
        with self._lock:
            if self._state != HALF_OPEN:
                return
            if ok:
                self._state, self._consecutive = CLOSED, 0
            else:
                self._open()

    def record_success(self) -> None:
        """The cloud answered (or refused the request: it is up). Resets the failure count when closed."""
        with self._lock:
            if self._state == CLOSED:
                self._consecutive = 0

    def record_failure(self) -> None:
        """A transient failure (unreachable, timed out, overloaded). Opens the breaker after ``failures`` in a
        row; failures of requests sent before it opened change nothing."""
        with self._lock:
            if self._state != CLOSED:
                return
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open()

    def _open(self) -> None:
        self._state, self._opened_at = OPEN, self._clock()
        self.opened += 1
