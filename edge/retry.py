"""When to try the cloud again: jittered exponential backoff, bounded by the attempts allowed and the deadline.

Pure functions of their arguments: the random draw comes from the ``rng`` passed in, so a test decides it.

Example:
    >>> policy = RetryPolicy(attempts=3, base_ms=20, factor=2, max_ms=500, jitter=0.0)
    >>> [round(policy.backoff_s(n, random.Random(0)), 3) for n in (1, 2, 3)]
    [0.02, 0.04, 0.08]
    >>> policy.delay_s(1, remaining_s=1.0, rng=random.Random(0))   # try again after 20 ms
    0.02
    >>> policy.delay_s(3, remaining_s=1.0, rng=random.Random(0)) is None   # three attempts made: no more
    True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How one request retries transient cloud failures.

    Args:
        attempts: at most this many tries per request (1: never retry).
        base_ms: the backoff before the second try; each further one is ``factor`` times longer...
        factor: ...up to ``max_ms``.
        max_ms: the longest backoff.
        jitter: the fraction of each backoff drawn at random (``0``: none, ``1``: anywhere from 0 to the backoff),
            so edges that failed together do not come back together.
        min_attempt_ms: no try starts with less time than this left before the deadline.
    """

    attempts: int = 3
    base_ms: float = 20.0
    factor: float = 2.0
    max_ms: float = 500.0
    jitter: float = 0.5
    min_attempt_ms: float = 20.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be a whole number >= 1 (1: no retries), got {self.attempts!r}")
        for name in ("base_ms", "max_ms", "min_attempt_ms"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"{name} must be a number of milliseconds >= 0, got {value!r}")
        if not _finite(self.factor) or self.factor < 1:
            raise ValueError(f"factor must be a number >= 1 (the backoff never shrinks), got {self.factor!r}")
        if not _finite(self.jitter) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, got {self.jitter!r}")

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """The wait after the ``failures``-th failed try (1, 2, ...), in seconds, jittered."""
        full = min(self.max_ms, self.base_ms * self.factor ** max(failures - 1, 0)) / 1e3
        return full * (1.0 - self.jitter * rng.random())

    def delay_s(self, failures: int, remaining_s: float, rng: random.Random) -> float | None:
        """The wait before the next try after ``failures`` failed ones, or ``None`` when there is no next try:
        the attempts are used up, or the backoff plus the shortest try no longer fits in ``remaining_s``."""
        if failures >= self.attempts:
            return None
        delay = self.backoff_s(failures, rng)
        if delay + self.min_attempt_ms / 1e3 > remaining_s:
            return None
        return delay
