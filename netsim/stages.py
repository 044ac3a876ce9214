"""What each toxic type does to one direction of one connection: pieces in, pieces out, each with a due time.

A piece is ``(due, data, mark)``: ``due`` is when it may leave (event-loop seconds), ``mark`` is ``""`` for
data, :data:`EOF` for the sender's end of stream and :data:`CLOSE` for "close the connection here". A chunk read
from a socket enters the first stage as one piece due now; every stage maps the pieces it gets to the pieces it
passes on, at once, so delays are computed when data arrives and never wait on one another: a latency stage
gives each piece ``max(arrival + latency ± jitter, previous due)`` — pipelined, and in order. Stages that act
on their own (``timeout``, ``reset_peer``) set timers through :class:`Actions`.

Example:
    >>> from netsim.toxics import Toxic
    >>> stage = make_stage(Toxic("latency", attributes={"latency": 250}), actions=None)  # latency sets no timers
    >>> [due for due, _, _ in stage.feed([(0.0, b"a", ""), (0.125, b"b", "")])]  # the second is not held back
    [0.25, 0.375]
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from netsim.toxics import Toxic

__all__ = ["CLOSE", "EOF", "STAGES", "Actions", "Piece", "Stage", "make_stage"]

Piece = tuple[float, bytes, str]
EOF = "eof"
CLOSE = "close"

_BANDWIDTH_SLICE_S = 0.01  # a bandwidth stage releases at most 10 ms worth of bytes at a time


class _Timer(Protocol):
    def cancel(self) -> None: ...


class Actions(Protocol):
    """What a stage may do to its connection (implemented by the connection; a fake in unit tests)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...


class Stage:
    """One toxic on one direction of one connection. Subclasses override :meth:`apply` (and timers)."""

    def __init__(self, toxic: Toxic, actions: Actions) -> None:
        self.toxic = toxic
        self.actions = actions
        self.active = False
        self.begin()

    def begin(self) -> None:
        """Start (or restart after an update): decide, with probability ``toxicity``, whether to act at all."""
        self.active = random.random() < self.toxic.toxicity

    def end(self) -> None:
        """Stop: cancel any timer (the toxic was removed or updated, or the connection closed)."""

    def update(self, toxic: Toxic) -> None:
        """New attributes for the same toxic; state (e.g. bytes counted, the last due time) is kept."""
        self.end()
        self.toxic = toxic
        self.begin()

    def feed(self, pieces: list[Piece]) -> list[Piece]:
        """The pieces to pass on for ``pieces`` arriving now (unchanged when the toxic is not active)."""
        return self.apply(pieces) if self.active and pieces else pieces

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        return pieces

    def attribute(self, key: str) -> float:
        return float(self.toxic.attributes[key])


class LatencyStage(Stage):
    """Each piece leaves ``latency ± jitter`` ms after it arrived, never before the piece ahead of it."""

    last_due = 0.0

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        latency, jitter = self.attribute("latency") / 1000, self.attribute("jitter") / 1000
        out = []
        for due, data, mark in pieces:
            delay = latency + random.uniform(-jitter, jitter) if jitter else latency
            self.last_due = max(due + max(delay, 0.0), self.last_due)
            out.append((self.last_due, data, mark))
        return out


class BandwidthStage(Stage):
    """Paced at ``rate`` KB/s: each slice leaves once its bytes have been sent, slices at most 10 ms long.

    A token bucket with no burst allowance: after an idle spell a chunk starts at once, and n bytes take n/rate.
    """

    free_at = 0.0  # when the bytes accepted so far will all have been sent

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        rate = self.attribute("rate") * 1000  # bytes per second; 0 = unlimited
        if rate <= 0:
            return pieces
        step = max(1, int(rate * _BANDWIDTH_SLICE_S))
        out = []
        for due, data, mark in pieces:
            sent = max(due, self.free_at)
            for start in range(0, len(data), step):
                part = data[start : start + step]
                sent += len(part) / rate
                out.append((sent, part, mark))
            if not data:
                out.append((sent, data, mark))
            self.free_at = sent
        return out


class TimeoutStage(Stage):
    """Drops all data; closes the connection ``timeout`` ms after the toxic started (0: never, a blackhole)."""

    timer: _Timer | None = None

    def begin(self) -> None:
        super().begin()
        timeout = self.attribute("timeout") / 1000
        if self.active and timeout > 0:
            self.timer = self.actions.call_later(timeout, self.actions.close)

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        return [piece for piece in pieces if piece[2]]  # marks (end of stream) pass, data is dropped


class ResetPeerStage(Stage):
    """The first data starts a ``timeout`` ms timer, then the connection is reset; data from then on is dropped."""

    timer: _Timer | None = None

    def begin(self) -> None:
        super().begin()
        self.timer = None

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        if self.timer is None:
            self.timer = self.actions.call_later(self.attribute("timeout") / 1000, self.actions.reset)
        return []


class LimitDataStage(Stage):
    """Passes the first ``bytes`` bytes, then closes the connection (after they have been delivered)."""

    passed = 0
    done = False

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        limit = int(self.attribute("bytes"))
        out: list[Piece] = []
        for due, data, mark in pieces:
            if self.done:
                break
            part = data[: max(limit - self.passed, 0)]
            self.passed += len(part)
            if part or mark:
                out.append((due, part, mark))
            if self.passed >= limit:
                out.append((due, b"", CLOSE))
                self.done = True
        return out


class SlicerStage(Stage):
    """Cuts data into slices of ``average_size ± size_variation`` bytes, ``delay`` µs apart."""

    free_at = 0.0

    def apply(self, pieces: list[Piece]) -> list[Piece]:
        average, variation = int(self.attribute("average_size")), int(self.attribute("size_variation"))
        delay = self.attribute("delay") / 1e6
        out = []
        for due, data, mark in pieces:
            at = max(due, self.free_at)
            start = 0
            while start < len(data):
                size = max(1, average + random.randint(-variation, variation))
                out.append((at, data[start : start + size], mark))
                start += size
                at += delay
            if not data:
                out.append((at, data, mark))
            self.free_at = at
        return out


STAGES: dict[str, type[Stage]] = {
    "latency": LatencyStage,
    "bandwidth": BandwidthStage,
    "timeout": TimeoutStage,
    "reset_peer": ResetPeerStage,
    "limit_data": LimitDataStage,
    "slicer": SlicerStage,
}
"""Toxic type -> the stage that implements it (the same keys as :data:`netsim.toxics.TOXIC_TYPES`)."""


def make_stage(toxic: Toxic, actions: Actions) -> Stage:
    """The stage for ``toxic`` on one direction of one connection, started."""
    return STAGES[toxic.type](toxic, actions)
