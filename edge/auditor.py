"""Online exit audits: a random fraction of exited samples also goes to the cloud, in the background.

Confident exits never reach the full model, so nothing on the answer path tells whether they still agree with it.
The :class:`Auditor` sends a random ``rate`` of exited samples (at most ``max_rps`` a second: a token bucket) to the
cloud from one background thread, at the split point right after the exit (the deepest tensor the edge has), and
records, when the answer comes, an observation per exit head evaluated on the sample (:mod:`edge.audit`). Offloaded
samples give the same evidence for free (their cloud answer). An audit never delays an answer or holds the request's
thread: the request only draws a random number and, if chosen, puts the sample in a bounded queue (full: dropped,
counted). Audits respect the circuit breaker (open: skipped) and the cloud's retry hints (``RESOURCE_EXHAUSTED`` with
``retry-after-ms``: paused until then), and do not feed the breaker; a failed or late audit is dropped and counted.

Weights: an audited sample weighs ``1 / (rate x completed / resolved)``, the effective audit rate (drops are
content-independent, so they change the rate, not the mix); an offloaded one ``1 / (referenced / unexited)``, 1
while every unexited sample got the full model's answer. With ``adaptive`` the :class:`~edge.audit.Controller`
moves the thresholds in force (:meth:`edge.runtime.EdgeRuntime.set_thresholds`); the manifest's stay as they are.

Example:
    >>> runtime = EdgeRuntime(bundle, cloud=client, audit=AuditConfig(rate=0.05, adaptive=True))   # doctest: +SKIP
    >>> runtime.stats()["audit"]["exits"]["exit0"]["threshold"]                                  # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.audit import Change, Controller, ControllerConfig, Evidence, ExitState
from edge.breaker import CircuitBreaker
from edge.client import CloudClient
from edge.errors import CloudRejected, CloudUnavailable
from edge.policy import criterion
from protos.bundle import Manifest
from protos.codecs import Codec, encode

__all__ = ["DROP_REASONS", "AuditConfig", "Auditor", "TokenBucket"]

log = logging.getLogger("edgesplit.edge.audit")

DROP_REASONS = ("rate_limited", "queue_full", "paused", "breaker_open", "deadline", "unavailable", "overloaded",
                "rejected", "closed")  # fmt: skip
"""Why a chosen audit got no answer: over ``max_rps``, the queue full, paused by the cloud's retry hint, the breaker
open, the cloud's failures (:data:`edge.errors.REASONS`), or the auditor closed with it still queued."""


@dataclass(frozen=True)
class AuditConfig:
    """Audits and the threshold controller.

    Args:
        rate: the fraction of exited samples audited (0 < rate <= 1).
        max_rps: at most this many audits a second (a token bucket holding one second's worth).
        adaptive: move the thresholds in force (else the estimates are only watched).
        window: requests the estimates cover.
        budget: the disagreement allowed per request, a fraction (default: the manifest's calibration budget),
            shared equally by the exits the edge checks.
        timeout_s: an audit's gRPC timeout; a late one is dropped.
        queue: audits waiting at most (more: dropped).
        tick_s: how often the audit thread looks at the evidence when no audit comes.
        controller: how the thresholds move.
    """

    rate: float = 0.05
    max_rps: float = 20.0
    adaptive: bool = False
    window: int = 2000
    budget: float | None = None
    timeout_s: float = 1.0
    queue: int = 32
    tick_s: float = 0.05
    controller: ControllerConfig = field(default_factory=ControllerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int | float) or not 0 < self.rate <= 1:
            raise ValueError(f"audit rate is a fraction of exited samples in (0, 1], got {self.rate!r}")
        for name in ("max_rps", "timeout_s", "tick_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.queue, int) or self.queue < 1:
            raise ValueError(f"queue must be a whole number >= 1, got {self.queue!r}")
        if self.budget is not None and not 0 < self.budget < 1:
            raise ValueError(f"budget is a fraction in (0, 1), got {self.budget!r}")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; :meth:`take` one if there is. The clock is passed in."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._at = self.burst, clock()

    def take(self) -> bool:
        """One token, if one is there now."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class _Route:
    split: int
    codec: Codec


@dataclass(frozen=True)
class _Item:
    seq: int
    candidates: tuple[tuple[int, float, int], ...]  # (exit number, key, label)
    route: _Route
    tensor: np.ndarray


class Auditor:
    """Evidence, audits and (with ``adaptive``) the thresholds in force, for one runtime.

    Args:
        manifest: the bundle's manifest (exits, calibrated thresholds, split points, the budget).
        cloud: where audits go (``None``: only the evidence of full-model answers, no audits).
        breaker: the runtime's circuit breaker (read, never fed).
        config: the rates and the controller.
        apply: called with the new thresholds (by exit name, criterion units) when they change.
        checked: how many exits the edge checks (the budget is shared among them).
        clock: monotonic seconds (the token bucket, the retry pause).
        rng: the random source of the audit draw.
    """

    def __init__(
        self,
        manifest: Manifest,
        cloud: CloudClient | None,
        breaker: CircuitBreaker,
        config: AuditConfig,
        apply: Callable[[Mapping[str, float]], None],
        checked: int,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config, self._manifest, self._cloud, self._breaker = config, manifest, cloud, breaker
        self._apply, self._clock, self._rng = apply, clock, rng or random.Random()
        exits = manifest.exits
        self._index = {e.name: k for k, e in enumerate(exits)}
        self._sign = [1.0 if criterion(e.criterion).higher_is_confident else -1.0 for e in exits]
        self._routes = [_audit_route(manifest, e.after_segment + 1) for e in exits]
        budget = config.budget if config.budget is not None else _manifest_budget(manifest)
        self.budget = budget
        states = [ExitState(e.name, s * e.threshold) for e, s in zip(exits, self._sign, strict=True)]
        share = budget / (checked or len(exits) or 1)  # equal shares of the exits the edge checks
        self.evidence = Evidence([e.name for e in exits], config.window)
        self.controller = Controller(states, [share] * len(exits), config.controller)
        self._lock = threading.Lock()
        self._bucket = TokenBucket(config.max_rps, max(1.0, config.max_rps), clock)
        self._counts: dict[str, Any] = dict.fromkeys(("selected", "sent", "completed", "bytes", "changes"), 0)
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._unexited = self._referenced = 0
        self._paused_until = -math.inf
        self._queue: queue.Queue[_Item] = queue.Queue(config.queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="edgesplit-audit", daemon=True)
        self._thread.start()

    # -- the answer path: O(1), never blocks -------------------------------------------------------------------
    def record(self, candidates: Sequence[tuple[float, Any]], tensors: Sequence[np.ndarray], answer: Any) -> None:
        """One answered request: count it; its full-model evidence now, or (an exit) maybe an audit later."""
        seq = self.evidence.request()
        if answer.source == "exit" and answer.degraded is None:
            if self._cloud is not None and self._rng.random() < self.config.rate:
                self._select(seq, candidates, tensors, answer.exit)
            return
        with self._lock:
            self._unexited += 1
            if answer.source == "exit":
                return  # degraded to an exit: no full-model answer for this one
            self._referenced += 1
            weight = self._unexited / self._referenced
        self._observe(seq, candidates, answer.label, weight)

    def _select(
        self, seq: int, candidates: Sequence[tuple[float, Any]], tensors: Sequence[np.ndarray], name: str
    ) -> None:
        route = self._routes[self._index[name]]
        if route is None:
            return  # no split point with a tail at or before this exit: nothing to audit with
        with self._lock:
            self._counts["selected"] += 1
            if not self._bucket.take():
                self._dropped["rate_limited"] += 1
                return
        obs = tuple((self._index[a.exit], key, a.label) for key, a in candidates)
        try:
            self._queue.put_nowait(_Item(seq, obs, route, tensors[route.split]))
        except queue.Full:
            self._drop("queue_full")

    def _observe(self, seq: int, candidates: Sequence[tuple[float, Any]], label: int, weight: float) -> None:
        for key, a in candidates:
            self.evidence.observe(seq, self._index[a.exit], key, a.label != label, weight)

    # -- the audit thread -------------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=self.config.tick_s)
            except queue.Empty:
                item = None
            if item is not None:
                try:
                    self._audit(item)
                finally:
                    self._queue.task_done()
            if self.controller.due(self.evidence):
                self.evaluate()

    def _audit(self, item: _Item) -> None:
        assert self._cloud is not None
        if self._clock() < self._paused_until:
            return self._drop("paused")
        if not self._breaker.allow():
            return self._drop("breaker_open")
        split, codec = item.route.split, item.route.codec
        boundary = self._manifest.segments[split].input
        wire = encode(codec, self._manifest.split_point(split).tensor.name, item.tensor, boundary)
        try:
            pending = self._cloud.send(split, wire, self.config.timeout_s, codec)
            with self._lock:
                self._counts["sent"] += 1
                self._counts["bytes"] += pending.bytes_sent
            reply = pending.result()
        except CloudUnavailable as err:
            if err.retry_after_s is not None:
                self._paused_until = max(self._paused_until, self._clock() + err.retry_after_s)
            return self._drop(err.reason)
        except CloudRejected:
            return self._drop("rejected")
        label = int(np.argmax(reply.logits[0]))
        with self._lock:
            self._counts["completed"] += 1
            resolved = self._counts["completed"] + sum(self._dropped.values())
            weight = resolved / (self.config.rate * self._counts["completed"])
        for k, key, exit_label in item.candidates:
            self.evidence.observe(item.seq, k, key, exit_label != label, weight)
        return None

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._dropped[reason] += 1

    def evaluate(self) -> list[Change]:
        """Refresh the estimates and (adaptive) move thresholds now; the audit thread calls it every ``every``
        observations. Logs every change and applies the new thresholds as a whole."""
        changes = self.controller.update(self.evidence, adapt=self.config.adaptive)
        if changes:
            for c in changes:
                log.info(
                    "exit %s threshold %s: %.6g -> %.6g (disagreement bound %.4f, allowance %.4f, request %d)",
                    c.exit, c.kind, self._unkey(c.exit, c.old), self._unkey(c.exit, c.new), c.bound, c.allowance,
                    c.request,
                )  # fmt: skip
            with self._lock:
                self._counts["changes"] += len(changes)
            self._apply({s.name: self._unkey(s.name, s.threshold) for s in self.controller.exits})
        return changes

    def _unkey(self, name: str, key: float) -> float:
        return self._sign[self._index[name]] * key

    def flush(self) -> None:
        """Wait until every audit queued so far has been answered or dropped (tests, benchmarks)."""
        self._queue.join()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the audit thread; audits still queued are dropped (``closed``)."""
        self._stop.set()
        self._thread.join(timeout_s)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._drop("closed")
            self._queue.task_done()

    def stats(self) -> dict[str, Any]:
        """Audit counters and, per exit, the estimate, bound, allowance and thresholds (criterion units)."""
        with self._lock:
            counts = {**self._counts, "dropped": dict(self._dropped)}
        exits = {
            s.name: {
                "threshold": self._unkey(s.name, s.threshold), "calibrated": self._unkey(s.name, s.calibrated),
                "disagreement": s.estimate, "bound": s.bound, "allowance": a,
                "agreement": None if math.isnan(s.agreement) else s.agreement, "observations": s.observations,
            }
            for s, a in zip(self.controller.exits, self.controller.allowances, strict=True)
        }  # fmt: skip
        settings = {"rate": self.config.rate, "max_rps": self.config.max_rps, "adaptive": self.config.adaptive}
        return {**settings, "budget": self.budget, "window": self.config.window, "requests": counts["sent"],
                **counts, "exits": exits}  # fmt: skip


def _manifest_budget(manifest: Manifest) -> float:
    for e in manifest.exits:
        if "budget" in e.calibration:
            return float(e.calibration["budget"])
    return 0.01


def _audit_route(manifest: Manifest, index: int) -> _Route | None:
    """Where an audit of a sample that exited before segment ``index`` goes: the deepest split point at or before
    ``index`` with a tail (``None``: none has)."""
    for sp in sorted(manifest.split_points, key=lambda s: -s.index):
        if sp.index <= index and sp.tail is not None:
            return _Route(sp.index, Codec.parse(sp.codec))
    return None
