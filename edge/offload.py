"""One request's trip to the cloud within its deadline: tries, jittered retries, and the circuit breaker's say.

An :class:`Offload` sends through a ``send(timeout_s)`` function that returns a request in flight
(:class:`~edge.client.PendingReply`), so the caller chooses how to wait: :meth:`Offload.wait` blocks (sleeping
out the backoffs), :meth:`Offload.poll` never blocks, so the edge can compute its own segments between polls
(racing). Each try gets the time left before the deadline as its gRPC timeout. Only transient failures
(:class:`~edge.errors.CloudUnavailable`) are retried, and only while the retry policy, the deadline and the breaker
allow; a rejection is final. Every try's outcome is reported to the breaker (a rejection counts as the cloud
being up). Clock, sleep and random source are passed in, so tests need no wall time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from edge.breaker import CircuitBreaker
from edge.client import CloudReply
from edge.errors import CloudRejected, CloudUnavailable
from edge.retry import RetryPolicy

__all__ = ["Offload", "Pending"]


class Pending(Protocol):
    """A request in flight, as :class:`edge.client.PendingReply`."""

    bytes_sent: int

    def done(self) -> bool:
        """Whether the outcome has arrived."""
        ...

    def result(self) -> CloudReply:
        """The reply, waiting for it; raises ``CloudUnavailable`` / ``CloudRejected``."""
        ...

    def cancel(self) -> None:
        """Stop the call."""
        ...


class Offload:
    """Tries to get one reply from the cloud before ``deadline`` (a time on ``clock``).

    Attributes:
        attempts: tries sent so far; ``retries`` is ``attempts - 1`` once more than one was needed.
        bytes_sent: tensor bytes put on the wire, over all tries.
    """

    def __init__(
        self,
        send: Callable[[float], Pending],
        deadline: float,
        *,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send, self.deadline = send, deadline
        self._breaker, self._retry, self._rng = breaker, retry, rng
        self._clock, self._sleep = clock, sleep
        self._call: Pending | None = None
        self._retry_at = -float("inf")
        self._failures = 0
        self._cancelled = False
        self.attempts = 0
        self.bytes_sent = 0

    def poll(self) -> CloudReply | None:
        """The reply if it is here; ``None`` while waiting (a try in flight or a backoff running). Sends the
        first try, or the next one once its backoff is over. Raises the cloud error when it gives up."""
        if self._cancelled:
            return None
        if self._call is None:
            if self._clock() < self._retry_at:
                return None
            self._launch()
        assert self._call is not None
        return self._collect() if self._call.done() else None

    def wait(self) -> CloudReply:
        """Block until the reply; raises the cloud error when it gives up (the deadline bounds the wait)."""
        while True:
            if self._call is None:
                self._sleep(max(self._retry_at - self._clock(), 0.0))
                self._launch()
            reply = self._collect()
            if reply is not None:
                return reply

    def cancel(self) -> None:
        """Give up on the cloud (the local answer won): the try in flight is cancelled, none follows."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _launch(self) -> None:
        remaining = self.deadline - self._clock()
        if remaining < self._retry.min_attempt_ms / 1e3:
            left = f"{remaining * 1e3:.0f} ms"
            raise CloudUnavailable(f"no time left to try the cloud ({left} before the deadline)", "deadline")
        if not self._breaker.allow():
            raise CloudUnavailable("the circuit breaker is open", "breaker_open")
        self._call = self._send(remaining)
        self.attempts += 1
        self.bytes_sent += self._call.bytes_sent

    def _collect(self) -> CloudReply | None:
        """The outcome of the try in flight (waits for it): the reply, ``None`` when a retry is scheduled."""
        call, self._call = self._call, None
        assert call is not None
        try:
            reply = call.result()
        except CloudRejected:
            self._breaker.record_success()
            raise
        except CloudUnavailable as exc:
            self._breaker.record_failure()
            self._failures += 1
            remaining = self.deadline - self._clock()
            delay = self._retry.delay_s(self._failures, remaining, self._rng)
            if delay is not None and exc.retry_after_s is not None:  # the server said when: not before that
                delay = max(delay, exc.retry_after_s)
                if delay + self._retry.min_attempt_ms / 1e3 > remaining:
                    raise  # its queue drains after our deadline: answer locally now, do not wait for nothing
            if delay is None or not self._breaker.allow():
                raise
            self._retry_at = self._clock() + delay
            return None
        self._breaker.record_success()
        return reply
