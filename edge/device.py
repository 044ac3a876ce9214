"""Emulate an edge device slower than this host: the compute counterpart of ``netsim``.

Planning a split is only interesting when the device is slower than the server: Neurosurgeon and Edgent profile a
phone or a Raspberry Pi against a server. On one machine, :class:`SlowSession` stands in for the device: it runs
the real ONNX Runtime session, then waits ``(slowdown - 1)`` times as long as the run took, so every call takes
``slowdown`` times its time on this host. It waits by sleeping, so the emulated device does not steal the host's
CPU from the cloud process it talks to. Only model compute is slowed (segments and exit heads), not the Python
around it (encode, serialisation): that is stated wherever a slowdown is reported.

``slowdown=1`` (the default everywhere) is the host itself: no wrapper at all.

Example:
    >>> session = slowed(ort.InferenceSession("seg0.onnx"), 10.0)   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Session", "SlowSession", "slowed"]


class Session(Protocol):
    """What the edge uses of an ONNX Runtime session."""

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        """Run the model."""
        ...

    def get_inputs(self) -> list[Any]:
        """The model's inputs."""
        ...


class SlowSession:
    """A session whose every ``run`` takes ``slowdown`` times as long as on this host."""

    def __init__(
        self,
        session: Session,
        slowdown: float,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not slowdown >= 1 or slowdown == float("inf"):  # also refuses NaN
            raise ValueError(f"slowdown is a factor >= 1 (the device is not faster than the host), got {slowdown}")
        self._session = session
        self.slowdown = slowdown
        self._clock, self._sleep = clock, sleep

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        """Run the real session, then wait out the rest of the emulated device's time."""
        start = self._clock()
        out = self._session.run(output_names, input_feed, run_options)
        deadline = start + (self._clock() - start) * self.slowdown
        while (left := deadline - self._clock()) > 0:
            self._sleep(left)
        return out

    def get_inputs(self) -> list[Any]:
        """The wrapped session's inputs."""
        return self._session.get_inputs()


def slowed(session: Any, slowdown: float) -> Any:
    """``session`` itself when ``slowdown`` is 1, else a :class:`SlowSession` around it."""
    if slowdown == 1:
        return session
    return SlowSession(session, float(slowdown))
