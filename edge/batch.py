"""Batches with per-sample exits: each segment runs once on the samples still in the batch.

A :class:`BatchRunner` answers a batch ``[B, *sample_shape]`` on an :class:`~edge.runtime.EdgeRuntime`'s current
route. Segment by segment it runs the samples left; when the route checks exits and an exit head follows, the
head runs on them too and the confident ones leave the batch with the exit's answer (the criterion and threshold
of :meth:`EdgeRuntime.infer <edge.runtime.EdgeRuntime.infer>`). At the split the rest are offloaded together, one
request, and each takes its row of the logits; at the last split point they get the full model's answer. When the
cloud does not answer, the rest of the segments run here on the samples left (exits checked as the route says),
each answer ``degraded`` with the reason: no sample is lost. The answers are the batch-of-one runtime's.

Two things keep them so. The int8 formats quantize with one scale for the whole tensor (``int8``) or per channel
over the batch (``int8c``): a sample's wire tensor would depend on its neighbours, so those codecs send one
request per sample, all in flight together (fp32 and fp16 are element-wise: one request; so is ``int8`` from an
int8 edge, whose boundary has one fixed scale for every sample). A segment or exit head
exported with a fixed batch dimension runs once per sample (:attr:`BatchRunner.per_sample` names them).

On an image codec's route (``jpeg90``, ``png`` at split point 0) each frame is encoded and sent on its own, one
after the other, by :meth:`EdgeRuntime.infer <edge.runtime.EdgeRuntime.infer>`.

Unlike a single request, a batch does not race the cloud, and its fallback runs to the end whatever the deadline
(the deadline bounds the cloud's tries).

Example:
    >>> answers = BatchRunner(runtime).infer(images)   # doctest: +SKIP
    >>> [(a.source, a.exit) for a in answers[:2]]      # doctest: +SKIP
    [('exit', 'exit0'), ('cloud', None)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.client import CloudReply, PendingReply
from edge.device import Session
from edge.errors import CloudError, CloudRejected
from edge.offload import Offload, Pending
from edge.policy import confident, softmax
from edge.runtime import Answer, EdgeRuntime, Route, _deadline_s

__all__ = ["BatchRunner", "infer_batch"]

log = logging.getLogger("edgesplit.edge")

_ELEMENTWISE = frozenset({"fp32", "fp16"})  # wire formats whose encoding of a sample ignores the rest of the batch


def infer_batch(runtime: EdgeRuntime, x: np.ndarray, deadline_ms: float | None = None) -> list[Answer]:
    """Answer every sample of ``x`` (``[B, *sample_shape]``) on ``runtime``'s route; see :class:`BatchRunner`."""
    return BatchRunner(runtime).infer(x, deadline_ms)


def _fixed_batch(session: Session) -> bool:
    """Whether the session's first input has a fixed batch dimension (a dynamic one is a name or ``None``)."""
    shape = session.get_inputs()[0].shape
    return bool(shape) and isinstance(shape[0], int)


def _run(session: Session, name: str, x: np.ndarray, per_sample: bool) -> np.ndarray:
    if per_sample and len(x) > 1:
        return np.concatenate([session.run(None, {name: x[j : j + 1]})[0] for j in range(len(x))])
    return np.asarray(session.run(None, {name: x})[0])


class _Together:
    """Requests for single samples in flight at once, seen as one (:class:`edge.offload.Pending`)."""

    def __init__(self, calls: list[PendingReply]) -> None:
        self._calls = calls
        self.bytes_sent = sum(c.bytes_sent for c in calls)

    def done(self) -> bool:
        return all(c.done() for c in self._calls)

    def result(self) -> CloudReply:
        replies = [c.result() for c in self._calls]
        logits = np.concatenate([r.logits for r in replies])
        return CloudReply(logits, self.bytes_sent, max(r.rpc_ms for r in replies), max(r.server_ms for r in replies))

    def cancel(self) -> None:
        for call in self._calls:
            call.cancel()


@dataclass
class _Batch:
    """The samples still without an answer: ``tensor`` (segment ``done``'s input) and their ``rows`` in the input."""

    tensor: np.ndarray
    rows: np.ndarray
    answers: list[Answer | None]
    start: float
    done: int = 0

    def keep(self, mask: np.ndarray) -> None:
        self.tensor, self.rows = self.tensor[mask], self.rows[mask]


class BatchRunner:
    """Answers batches on ``runtime`` (its sessions, route, breaker, retry policy and counters). Thread-safe as the
    runtime is: each call reads the route once.

    Attributes:
        per_sample: the segments and exit heads (``seg{i}``, ``exit{i}`` by the segment before) whose ONNX batch
            dimension is fixed: they run once per sample.
    """

    def __init__(self, runtime: EdgeRuntime) -> None:
        self.runtime = runtime
        # The runtime's sessions are built once; a batch runs the same ones (private to edge/, read here only).
        self._segments = runtime._segments
        self._exits = runtime._exits
        self._n = len(runtime.manifest.segments)
        fixed = [f"seg{i}" for i, s in enumerate(self._segments) if _fixed_batch(s)]
        fixed += [f"exit{i}" for i, g in self._exits.items() if _fixed_batch(g.session)]
        self.per_sample = frozenset(fixed)
        if fixed:
            log.info("fixed batch dimension, run per sample: %s", ", ".join(sorted(fixed)))

    def infer(self, x: Any, deadline_ms: float | None = None) -> list[Answer]:
        """One answer per sample of ``x`` (``[B, *sample_shape]``, or frames or encoded images, see
        :meth:`edge.inputs.Inputs.batch`), in input order. ``deadline_ms`` (default: the runtime's) bounds the
        cloud's tries; each answer's ``latency_ms`` is the time until it was known."""
        rt = self.runtime
        start = rt._clock()
        deadline = start + (rt._deadline_s if deadline_ms is None else _deadline_s(deadline_ms))
        route = rt.route  # one read: a concurrent switch never mixes two routes in one batch
        if route.codec.image:  # each frame is its own image on the wire: one request per sample, in turn
            items = list(x.ravel()) if isinstance(x, np.ndarray) and x.dtype == object else list(x)
            return [rt.infer(item, deadline_ms) for item in items]
        tensor = self._prepare(x)
        batch = _Batch(tensor, np.arange(len(tensor)), [None] * len(tensor), start)
        offload: Offload | None = None
        while batch.done < route.split and batch.rows.size:
            self._step(batch, route.exits)
        if batch.rows.size and route.split == self._n:
            self._full(batch)
        elif batch.rows.size:
            offload = self._offload(batch, route, deadline)
        answers = [a for a in batch.answers if a is not None]
        assert len(answers) == len(batch.answers)
        self._count(answers, offload)
        return answers

    def _prepare(self, x: Any) -> np.ndarray:
        return self.runtime.inputs.batch(x)

    def _step(self, batch: _Batch, check_exits: bool, degraded: str | None = None) -> None:
        """Run the next segment on the samples left, then its exit head when ``check_exits``."""
        i = batch.done
        name = self.runtime.manifest.segments[i].input.name
        batch.tensor = _run(self._segments[i], name, batch.tensor, f"seg{i}" in self.per_sample)
        batch.done += 1
        if check_exits and i in self._exits and i + 1 < self._n:
            self._evaluate(batch, i, degraded)

    def _evaluate(self, batch: _Batch, i: int, degraded: str | None) -> None:
        """The exit head after segment ``i``: the confident samples leave the batch with its answer."""
        gate = self._exits[i]
        probs = softmax(_run(gate.session, gate.input_name, batch.tensor, f"exit{i}" in self.per_sample))
        scores = gate.criterion.score(probs).astype(np.float64)  # as the single path: a float64 against the threshold
        exits = confident(gate.criterion, scores, self.runtime._thresholds[i])  # the thresholds in force
        for j in np.flatnonzero(exits):
            answer = EdgeRuntime._answer(probs[j : j + 1], "exit", i + 1, exit=gate.spec.name, degraded=degraded)
            self._settle(batch, int(j), answer)
        batch.keep(~exits)

    def _full(self, batch: _Batch, degraded: str | None = None) -> None:
        probs = softmax(batch.tensor)
        for j in range(len(batch.rows)):
            self._settle(batch, j, EdgeRuntime._answer(probs[j : j + 1], "edge", self._n, degraded=degraded))
        batch.keep(np.zeros(len(batch.rows), dtype=bool))

    def _settle(self, batch: _Batch, j: int, answer: Answer) -> None:
        latency_ms = (self.runtime._clock() - batch.start) * 1e3
        batch.answers[int(batch.rows[j])] = replace(answer, latency_ms=latency_ms)

    def _offload(self, batch: _Batch, route: Route, deadline: float) -> Offload | None:
        """Send the samples left (unless the breaker is open); the cloud's answers, or local degraded ones."""
        rt = self.runtime
        if not rt.breaker.allow():
            rt._maybe_probe()
            self._fallback(batch, route, "breaker_open")
            return None
        tensor = batch.tensor
        offload = Offload(
            lambda timeout_s: self._send(route, tensor, timeout_s),
            deadline,
            breaker=rt.breaker,
            retry=rt.retry,
            rng=rt._rng,
            clock=rt._clock,
        )
        try:
            reply = offload.wait()
            if reply.logits.shape[0] != len(tensor):
                raise CloudRejected(f"the cloud answered {reply.logits.shape[0]} rows for {len(tensor)} samples")
        except CloudError as err:
            if err.reason == "rejected":
                log.warning("the cloud rejected a batch; answering on the edge: %s", err)
            self._fallback(batch, route, err.reason)
            return offload
        self._cloud_answers(batch, route, reply)
        return offload

    def _send(self, route: Route, tensor: np.ndarray, timeout_s: float) -> Pending:
        cloud = self.runtime._cloud
        assert cloud is not None  # the route offloads: the runtime checked it has a client
        name = self.runtime.manifest.split_point(route.split).tensor.name
        boundary = self.runtime.manifest.segments[route.split].input
        # an int8 edge's boundary has one scale for every sample: its int8 batch travels whole, like fp32
        together = route.codec.format in _ELEMENTWISE or (boundary.quantized and route.codec.format == "int8")
        if together or len(tensor) == 1:
            return cloud.infer_async(route.split, name, tensor, timeout_s, route.codec, boundary)
        rows = [tensor[j : j + 1] for j in range(len(tensor))]
        return _Together([cloud.infer_async(route.split, name, row, timeout_s, route.codec, boundary) for row in rows])

    def _cloud_answers(self, batch: _Batch, route: Route, reply: CloudReply) -> None:
        probs, k = softmax(reply.logits), len(batch.rows)
        wire = {"split": route.split, "bytes_sent": round(reply.bytes_sent / k), "codec": route.codec.name}
        times = {"rpc_ms": reply.rpc_ms, "server_ms": reply.server_ms}
        for j in range(k):
            self._settle(batch, j, EdgeRuntime._answer(probs[j : j + 1], "cloud", route.split, **wire, **times))
        batch.keep(np.zeros(k, dtype=bool))

    def _fallback(self, batch: _Batch, route: Route, reason: str) -> None:
        """Run the rest of the segments here on the samples left: confident exits (as the route says), then the
        full model; every answer degraded for ``reason``."""
        while batch.rows.size and batch.done < self._n:
            self._step(batch, route.exits, reason)
        if batch.rows.size:
            self._full(batch, reason)

    def _count(self, answers: list[Answer], offload: Offload | None) -> None:
        """The runtime's counters: every answer, and the batch's cloud tries once (with its first offloaded answer)."""
        for answer in answers:
            offloaded = offload is not None and (answer.source == "cloud" or answer.degraded is not None)
            self.runtime._counters.count(answer, offload if offloaded else None)
            if offloaded:
                offload = None
