"""The edge's errors. ``grpc.RpcError`` is translated into these once, in :mod:`edge.client`."""

from __future__ import annotations

__all__ = ["CloudRejected", "CloudUnavailable", "EdgeError"]


class EdgeError(Exception):
    """Base of the edge runtime's errors."""


class CloudUnavailable(EdgeError):
    """The cloud did not answer in time, is unreachable, or shed the load: falling back locally may help."""


class CloudRejected(EdgeError):
    """The cloud refused the request (bad tensor, unknown model, other bundle): retrying will not help."""
