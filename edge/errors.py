"""The edge's errors. ``grpc.RpcError`` is translated into these once, in :mod:`edge.client`.

Every cloud error carries a ``reason``: the word a degraded answer (:attr:`edge.runtime.Answer.degraded`) and the
runtime's counters use for it. The runtime adds ``"breaker_open"`` (the circuit breaker kept the request local).
"""

from __future__ import annotations

__all__ = ["REASONS", "CloudError", "CloudRejected", "CloudUnavailable", "EdgeError"]

REASONS = ("deadline", "unavailable", "overloaded", "breaker_open", "rejected")
"""Why an answer is degraded: the deadline passed, the cloud was unreachable, it shed load (RESOURCE_EXHAUSTED),
the circuit breaker was open, or the cloud refused the request."""


class EdgeError(Exception):
    """Base of the edge runtime's errors."""


class CloudError(EdgeError):
    """The cloud did not answer the request; ``reason`` is one of :data:`REASONS`."""

    reason = "unavailable"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            if reason not in REASONS:
                raise ValueError(f"unknown reason {reason!r}; valid reasons: {', '.join(REASONS)}")
            self.reason = reason


class CloudUnavailable(CloudError):
    """The cloud did not answer in time, is unreachable, or shed the load: falling back locally may help, and so
    may trying again later (``reason``: ``deadline``, ``unavailable`` or ``overloaded``); ``retry_after_s`` is the
    server's hint of when (its ``retry-after-ms`` trailing metadata), if it gave one."""

    def __init__(self, message: str, reason: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, reason)
        self.retry_after_s = retry_after_s


class CloudRejected(CloudError):
    """The cloud refused the request (bad tensor, unknown model, other bundle): retrying will not help."""

    reason = "rejected"
