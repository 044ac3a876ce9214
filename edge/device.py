"""Emulate an edge device slower than this host: the compute counterpart of ``netsim``.

Planning a split is only interesting when the device is slower than the server: Neurosurgeon and Edgent profile a
phone or a Raspberry Pi against a server. On one machine, :class:`SlowSession` stands in for the device. On its
first call it times the real ONNX Runtime session on that input (the median of ``calibration_runs`` warm runs):
the device's time for the call is ``slowdown`` times that. Every call then runs the real session and waits until
the device's time has passed. Scaling the median, not each call's own time, keeps the host's noise (a 1 ms
scheduling hiccup would become 300 ms at ``slowdown=300``) out of the emulated device. It waits by sleeping, so the
emulated device does not steal the host's CPU from the cloud process it talks to. Only model compute is slowed
(segments and exit heads), not the Python around it (encode, serialisation): that is stated wherever a slowdown
is reported.

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
    """A session whose every ``run`` takes ``slowdown`` times its median time on this host (timed on first use)."""

    def __init__(
        self,
        session: Session,
        slowdown: float,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        calibration_runs: int = 21,
        device_s: float | None = None,
    ) -> None:
        if not slowdown >= 1 or slowdown == float("inf"):  # also refuses NaN
            raise ValueError(f"slowdown is a factor >= 1 (the device is not faster than the host), got {slowdown}")
        self._session = session
        self.slowdown = slowdown
        self._clock, self._sleep = clock, sleep
        self._calibration_runs = calibration_runs
        # The emulated device's time per call: timed on first use, or given (the profile's, so that the device the
        # planner was told about is the one that runs: at a factor of 1000, 10 us of host noise is 10 ms).
        self.device_s: float | None = device_s

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        """Run the real session, then wait out the rest of the emulated device's time."""
        if self.device_s is None:
            self.device_s = self.slowdown * self._median_s(output_names, input_feed, run_options)
        start = self._clock()
        out = self._session.run(output_names, input_feed, run_options)
        deadline = start + self.device_s
        while (left := deadline - self._clock()) > 0:
            self._sleep(left)
        return out

    def _median_s(self, output_names: list[str] | None, input_feed: dict[str, Any], run_options: Any) -> float:
        times = []
        for _ in range(self._calibration_runs):
            start = self._clock()
            self._session.run(output_names, input_feed, run_options)
            times.append(self._clock() - start)
        return sorted(times)[len(times) // 2]

    def get_inputs(self) -> list[Any]:
        """The wrapped session's inputs."""
        return self._session.get_inputs()


def slowed(session: Any, slowdown: float, device_ms: float | None = None) -> Any:
    """``session`` itself when ``slowdown`` is 1, else a :class:`SlowSession` around it (each call taking
    ``device_ms`` when given, else ``slowdown`` times the host's median, timed on first use)."""
    if slowdown == 1:
        return session
    return SlowSession(session, float(slowdown), device_s=None if device_ms is None else device_ms / 1e3)
