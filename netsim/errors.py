"""netsim's errors and their HTTP status codes: the one place where the mapping lives.

Every error carries its status as a class attribute, so the API answers ``{"error": str(exc), "status": N}``
without an if/elif chain. Bad input is also a :class:`ValueError` and a missing name a :class:`LookupError`, so
callers that use netsim directly (tests, the CLI) can catch the built-in kinds.
"""

from __future__ import annotations

__all__ = ["BadRequestError", "ConflictError", "NetSimError", "NotFoundError", "names_or_none"]


class NetSimError(Exception):
    """Base of netsim's errors; ``status`` is the HTTP status the API answers with."""

    status = 500


class BadRequestError(NetSimError, ValueError):
    """A malformed request: a bad address, toxic type, stream, toxicity or attribute."""

    status = 400


class NotFoundError(NetSimError, LookupError):
    """No proxy or toxic of that name (the message lists the ones there are)."""

    status = 404


class ConflictError(NetSimError, ValueError):
    """A proxy or toxic of that name exists already, or the listen address is taken."""

    status = 409


def names_or_none(names: list[str]) -> str:
    """``"a, b"`` or ``"none"``: for messages that list what exists."""
    return ", ".join(sorted(names)) or "none"
