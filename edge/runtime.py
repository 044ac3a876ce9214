"""The edge runtime: run segments, stop at the first confident exit, otherwise offload the split tensor.

The edge never loses a request. Each request has a deadline; the cloud call gets the time left as its gRPC
timeout, transient failures are retried while the deadline allows (:mod:`edge.retry`, :mod:`edge.offload`), and a
circuit breaker (:mod:`edge.breaker`) keeps requests local while the cloud fails. When the cloud does not answer
(deadline, unavailable, overloaded, rejected, or the breaker open), the edge answers itself, ``degraded`` with
the reason: it runs on past the split while the deadline allows (a confident exit, when the route checks exits,
or the full model at the end); once the deadline has passed, it answers from the most confident exit head
evaluated so far, else evaluates the deepest exit head whose input it has, else runs on to the next exit head or
the end (only with no exit before it: an answer late beats none). A rejection is logged too.

With ``race=True`` the edge does not wait idle: while the tensor is in flight it runs its remaining segments and
exits and returns the first acceptable answer: the cloud's, a confident exit's or the full local model's. A local
win is not degraded; the cloud call is cancelled.

Example:
    >>> runtime = EdgeRuntime(Bundle.load("bundle/"), cloud=CloudClient(...), deadline_ms=200)   # doctest: +SKIP
    >>> answer = runtime.infer(image)                                                          # doctest: +SKIP
    >>> answer.source, answer.exit, answer.confidence, answer.degraded                         # doctest: +SKIP
    ('exit', 'exit0', 0.97, None)
    >>> runtime.stats()["fallbacks"]                                                           # doctest: +SKIP
    {'deadline': 0, 'unavailable': 0, 'overloaded': 0, 'breaker_open': 0, 'rejected': 0}
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import onnxruntime as ort

from edge.auditor import AuditConfig, Auditor
from edge.breaker import CircuitBreaker
from edge.client import CloudClient, CloudReply
from edge.device import Session, slowed
from edge.errors import REASONS, CloudError, EdgeError
from edge.inputs import Inputs
from edge.metrics import Histogram
from edge.offload import Offload
from edge.policy import Criterion, MaxSoftmax, confident, criterion, softmax, top_class
from edge.retry import RetryPolicy
from protos.bundle import Bundle, BundleError, Exit, Manifest
from protos.codecs import Codec, encode

__all__ = ["Answer", "Counters", "EdgeRuntime", "Route"]

log = logging.getLogger("edgesplit.edge")


@dataclass(frozen=True)
class Answer:
    """One prediction and where it came from.

    ``source`` is ``"exit"`` (an early exit on the edge, named by ``exit``), ``"edge"`` (the full model ran on
    the edge) or ``"cloud"`` (the tail ran in the cloud from split point ``split``; then ``bytes_sent`` and
    ``codec`` say what went on the wire, ``rpc_ms`` the round trip the edge saw and ``server_ms`` the cloud's
    own share of it). ``degraded`` says why a request meant for the cloud was answered on the edge
    (``deadline``, ``unavailable``, ``overloaded``, ``breaker_open`` or ``rejected``; ``None``: it was not);
    ``latency_ms`` is the time :meth:`EdgeRuntime.infer` took.
    """

    label: int
    confidence: float
    source: str
    probabilities: np.ndarray
    segments_run: int
    exit: str | None = None
    split: int | None = None
    bytes_sent: int = 0
    codec: str | None = None
    rpc_ms: float = 0.0
    server_ms: float = 0.0
    degraded: str | None = None
    latency_ms: float = 0.0


_ANSWER_DEFAULTS = {f.name: f.default for f in fields(Answer)}


def _local_answer(
    label: int, confidence: float, source: str, probabilities: np.ndarray, segments_run: int, exit: str | None = None
) -> Answer:
    """``Answer(label, confidence, source, probabilities, segments_run, exit)``, built at once for the per-request
    path: a frozen dataclass's ``__init__`` sets its 13 fields one by one through ``object.__setattr__`` (over a
    microsecond); this fills the new instance's ``__dict__`` in one update. The result is an ordinary Answer (the
    constructor's fields and values, frozen, ``replace``-able)."""
    answer = object.__new__(Answer)
    answer.__dict__.update(
        _ANSWER_DEFAULTS,
        label=label,
        confidence=confidence,
        source=source,
        probabilities=probabilities,
        segments_run=segments_run,
        exit=exit,
    )
    return answer


@dataclass(frozen=True)
class Route:
    """Where the edge sends work: the split point, the wire codec, whether exits are checked, and whether the
    tensor goes through the split point's learned bottleneck (its encoder runs on the edge, the code travels with
    ``codec``; the edge's own fallback past the split runs its segments on the tensor before the encoder)."""

    split: int
    codec: Codec
    exits: bool
    bottleneck: bool = False


@dataclass(frozen=True)
class _ExitGate:
    spec: Exit
    session: Session
    input_name: str
    criterion: Criterion


class _Run:
    """One request's local progress: ``tensors[i]`` is segment ``i``'s input (``tensors[0]`` the sample);
    ``candidates`` the exit heads evaluated, as (confidence key, answer); ``thresholds`` the exits' thresholds in
    force, read once per request (by segment index). On an image codec's route ``frame`` is the device's frame and
    ``tensors`` starts empty: the sample is preprocessed only if the edge needs it."""

    __slots__ = ("candidates", "deadline", "frame", "tensors", "thresholds")

    def __init__(
        self, sample: np.ndarray | None, deadline: float, thresholds: dict[int, float], frame: np.ndarray | None = None
    ) -> None:
        self.tensors = [] if sample is None else [sample]
        self.deadline = deadline
        self.candidates: list[tuple[float, Answer]] = []
        self.frame = frame
        self.thresholds = thresholds

    @property
    def done(self) -> int:
        """Segments run so far."""
        return len(self.tensors) - 1


class Counters:
    """Thread-safe counts of what a runtime did (:meth:`EdgeRuntime.stats`, :meth:`edge.text.TextRuntime.stats`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        counts = ("requests", "offloads", "retries", "race_local_wins", "bytes_sent")
        self.values: dict[str, Any] = dict.fromkeys(counts, 0)
        tables = {"answers": ("exit", "edge", "cloud"), "exits": (), "fallbacks": REASONS}
        self.values.update({key: dict.fromkeys(names, 0) for key, names in tables.items()})
        self.latency = Histogram()

    def count(self, answer: Answer, offload: Offload | None) -> None:
        with self._lock:
            v = self.values
            v["requests"] += 1
            self.latency.observe(answer.latency_ms)
            v["answers"][answer.source] += 1
            if answer.exit is not None:
                v["exits"][answer.exit] = v["exits"].get(answer.exit, 0) + 1
            if answer.degraded is not None:
                v["fallbacks"][answer.degraded] += 1
            if offload is not None:
                v["offloads"] += offload.attempts
                v["retries"] += max(offload.attempts - 1, 0)
                v["bytes_sent"] += offload.bytes_sent
                v["race_local_wins"] += answer.source != "cloud" and answer.degraded is None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            values = {k: dict(v) if isinstance(v, dict) else v for k, v in self.values.items()}
            return {**values, "latency_ms": self.latency.snapshot()}


def _session(path: str, threads: int, slowdown: float = 1.0, device_ms: float | None = None) -> Session:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return slowed(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), slowdown, device_ms)


def _profiled_ms(manifest: Manifest, slowdown: float, threads: int) -> tuple[list[float | None], dict[str, float]]:
    """The device's ms per segment and per exit head as the profile measured them, when the profile emulated
    this same device (factor and threads); else ``None``s: the emulation times the host itself on first use."""
    p = manifest.profile or {}
    same = slowdown != 1 and math.isclose(float(p.get("edge_slowdown", 1.0)), slowdown, rel_tol=1e-9)
    if not same or int(p.get("edge_threads", 1)) != threads or len(p.get("segment_ms", ())) != len(manifest.segments):
        return [None] * len(manifest.segments), {}
    return [float(ms) for ms in p["segment_ms"]], {k: float(v) for k, v in p.get("exit_ms", {}).items()}


def _deadline_s(deadline_ms: float) -> float:
    if not isinstance(deadline_ms, int | float) or not math.isfinite(deadline_ms) or deadline_ms <= 0:
        raise ValueError(f"deadline_ms must be a positive number of milliseconds, got {deadline_ms!r}")
    return deadline_ms / 1e3


class EdgeRuntime:
    """Runs a bundle's head on the device; sessions are built once, here. Thread-safe.

    Args:
        bundle: the bundle written by ``split/``.
        split: the split point (segments ``[0, split)`` run here); default: the manifest's.
        cloud: the cloud client; required unless ``split`` is the last split point (edge only).
        exits: whether early exits are checked (off for a plain split baseline).
        threads: ONNX Runtime intra-op threads (a device has few cores).
        codec: how the split tensor travels (``fp32``, ``int8+zstd`` …, see :mod:`protos.codecs`); default: the
            split point's codec in the manifest.
        slowdown: emulate a device this many times slower than this host (:mod:`edge.device`; 1 = the host).
        deadline_ms: each request's deadline, from the call to :meth:`infer` (which may override it).
        race: compute the rest of the model locally while the tensor is in flight; the first answer wins.
        bottleneck: offload through the split point's learned bottleneck (the manifest's; an error lists the split
            points that have one).
        breaker: the circuit breaker (default: 3 failures open it for 2 s).
        retry: how transient failures are retried (default: :class:`~edge.retry.RetryPolicy`'s).
        rng: the random source of the retry jitter.
        probe_timeout_s: the health check's timeout when the breaker is half-open.
        audit: audit a fraction of exited samples against the cloud and (``adaptive``) re-calibrate the thresholds
            in force at run time (:mod:`edge.auditor`); ``None``: off. Call :meth:`close` to stop its thread.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        split: int | None = None,
        cloud: CloudClient | None = None,
        exits: bool = True,
        threads: int = 1,
        codec: str | None = None,
        slowdown: float = 1.0,
        deadline_ms: float = 1000.0,
        race: bool = False,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        probe_timeout_s: float = 0.5,
        audit: AuditConfig | None = None,
        bottleneck: bool = False,
    ) -> None:
        self.manifest = bundle.manifest
        self.inputs = Inputs.load(bundle, threads)
        self._n = len(self.manifest.segments)
        segment_ms, exit_ms = _profiled_ms(self.manifest, slowdown, threads)
        self._segments = [
            _session(str(bundle.edge_file(s.file)), threads, slowdown, ms)
            for s, ms in zip(self.manifest.segments, segment_ms, strict=True)
        ]
        self._exits: dict[int, _ExitGate] = {}
        for spec in self.manifest.exits:
            session = _session(str(bundle.edge_file(spec.file)), threads, slowdown, exit_ms.get(spec.name))
            self._exits[spec.after_segment] = _ExitGate(
                spec, session, session.get_inputs()[0].name, criterion(spec.criterion)
            )
        # Per segment, what a request needs: its session, its input's name and the exit head after it (none after
        # the last segment: the model's own output answers there), looked up once here, not per request.
        names = [s.input.name for s in self.manifest.segments]
        gates = [self._exits.get(i) if i + 1 < self._n else None for i in range(self._n)]
        self._stages = list(zip(self._segments, names, gates, strict=True))
        self._encoders = {  # per split point with a learned bottleneck: its encoder's session and code's name
            k: (_session(str(bundle.edge_file(b.encoder)), threads, slowdown), b.code.name)
            for k, b in ((sp.index, sp.bottleneck) for sp in self.manifest.split_points)
            if b is not None
        }
        self._cloud = cloud
        default = self.manifest.default_split if split is None else split
        self._route = self._check(default, codec, exits, bottleneck)
        self._deadline_s = _deadline_s(deadline_ms)
        self.race = race
        self.breaker = breaker or CircuitBreaker()
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._probe_timeout_s = probe_timeout_s
        self._clock = time.monotonic
        self._counters = Counters()
        # The thresholds in force, by segment index: one dict swapped as a whole (set_thresholds), read once per
        # request; the manifest's calibrated thresholds are never changed.
        self._thresholds = {i: g.spec.threshold for i, g in self._exits.items()}
        self._auditor = None if audit is None else Auditor(
            self.manifest, cloud, self.breaker, audit, self.set_thresholds,
            len(self.manifest.exits_before(self._route.split)), rng=random.Random(self._rng.random()),
        )  # fmt: skip

    @property
    def route(self) -> Route:
        """The current split point, codec and exits setting (swapped atomically by :meth:`set_route`)."""
        return self._route

    @property
    def split(self) -> int:
        """The current split point."""
        return self._route.split

    @property
    def codec(self) -> Codec:
        """The current wire codec."""
        return self._route.codec

    def set_split(self, split: int, codec: str | None = None) -> None:
        """Move the split point, and optionally change the codec (takes effect for the next request)."""
        self._route = self._check(split, codec or self._route.codec.name, self._route.exits)

    def set_route(self, split: int, codec: str, exits: bool, bottleneck: bool = False) -> Route:
        """Switch split point, codec, exits and bottleneck at once, without a restart; requests in flight finish
        on the old route, the next ones take the new one. Returns the new route."""
        self._route = self._check(split, codec, exits, bottleneck)
        return self._route

    @property
    def thresholds(self) -> dict[str, float]:
        """The exits' thresholds in force, by exit name (the manifest's calibrated ones unless set otherwise)."""
        current = self._thresholds
        return {g.spec.name: current[i] for i, g in self._exits.items()}

    def set_thresholds(self, values: Mapping[str, float]) -> None:
        """Put new thresholds in force (by exit name; the others keep theirs), all at once for the next request.
        The manifest is not changed. An unknown exit name lists the valid ones."""
        names = {g.spec.name: i for i, g in self._exits.items()}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise KeyError(f"no exits {unknown}; exits: {list(names)}")
        new = dict(self._thresholds)
        for name, value in values.items():
            if not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"threshold of {name!r} must be a number, got {value!r}")
            new[names[name]] = float(value)
        self._thresholds = new

    def flush_audits(self) -> None:
        """Wait until every audit queued so far has been answered or dropped (tests and benchmarks that replay a
        stream deterministically; :meth:`infer` never waits for an audit)."""
        if self._auditor is not None:
            self._auditor.flush()

    def close(self) -> None:
        """Stop the audit thread (when audits are on); the runtime keeps answering, without audits."""
        if self._auditor is not None:
            self._auditor.close()

    def segment_session(self, index: int) -> Session:
        """The session of segment ``index`` (the one :meth:`infer` runs)."""
        return self._segments[index]

    def exit_session(self, name: str) -> Session:
        """The session of the exit head called ``name``; ``KeyError`` listing the exits otherwise."""
        for gate in self._exits.values():
            if gate.spec.name == name:
                return gate.session
        raise KeyError(f"no exit {name!r}; exits: {[g.spec.name for g in self._exits.values()]}")

    def stats(self) -> dict[str, Any]:
        """Counters: ``requests``, ``answers`` by source, ``exits`` per exit, ``offloads`` (tries sent), ``retries``,
        ``race_local_wins``, ``fallbacks`` by reason, ``bytes_sent``, ``breaker`` (``state``, times ``opened``); with
        audits, ``audit`` (:meth:`edge.auditor.Auditor.stats`: audits and, per exit, estimate, bound, thresholds)."""
        values = self._counters.snapshot()
        values["breaker"] = {"state": self.breaker.state, "opened": self.breaker.opened}
        if self._auditor is not None:
            values["audit"] = self._auditor.stats()
        return values

    def _check(self, split: int, codec: str | None, exits: bool, bottleneck: bool = False) -> Route:
        if bottleneck:
            return self._check_bottleneck(split, codec, exits)
        point = self.manifest.split_point(split)
        if split < self._n and self._cloud is None:
            raise EdgeError(
                f"split point {split} offloads to the cloud but no cloud client was given;"
                f" use split {self._n} for edge-only"
            )
        chosen = Codec.parse(codec or point.codec)
        if chosen.image and chosen.format not in point.images:
            takes = f"it takes {list(point.images)}" if point.images else "this bundle's split points take none"
            raise EdgeError(
                f"codec {chosen.name!r} sends the frame as an image, at split point 0 of a bundle that declares it;"
                f" {takes} at split point {split}"
            )
        if split < self._n and chosen.format not in point.tails and not chosen.image:
            raise EdgeError(f"split point {split} has no tail for {chosen.format!r}; formats: {sorted(point.tails)}")
        return Route(split, chosen, exits)

    def _check_bottleneck(self, split: int, codec: str | None, exits: bool) -> Route:
        try:
            found = self.manifest.bottleneck(split)
        except BundleError as err:
            raise EdgeError(str(err)) from None
        if self._cloud is None:
            raise EdgeError(f"split point {split}'s bottleneck offloads to the cloud but no cloud client was given")
        chosen = Codec.parse(codec or found.codec)
        if chosen.format not in found.files:
            raise EdgeError(
                f"split point {split}'s bottleneck takes no format {chosen.format!r}; valid: {sorted(found.files)}"
            )
        return Route(split, chosen, exits, bottleneck=True)

    def infer(self, x: Any, deadline_ms: float | None = None) -> Answer:
        """Answer one sample: from the first confident exit, the edge's full model, or the cloud; when the cloud
        fails it, from the edge, degraded (see the module's docstring). ``deadline_ms`` overrides the runtime's.

        ``x`` is the model-ready tensor or, for a bundle with image preprocessing, a uint8 RGB frame ``[H, W, 3]``
        or an encoded image's bytes (:mod:`edge.inputs`); preprocessing counts in ``latency_ms``. An image codec's
        route (``jpeg90``, ``png`` at split point 0) encodes the frame instead (an image given as bytes is decoded
        and re-encoded at the codec's quality), and that counts; it cannot encode a model-ready tensor."""
        clock = self._clock
        start = clock()
        deadline = start + (self._deadline_s if deadline_ms is None else _deadline_s(deadline_ms))
        route = self._route  # one read: a concurrent switch never mixes two routes in one request
        if route.codec.image:
            run = _Run(None, deadline, self._thresholds, frame=self.inputs.frame(x, route.codec.name))
        else:
            run = _Run(self.inputs.one(x), deadline, self._thresholds)
        offload: Offload | None = None
        answer = self._head(run, route)
        if answer is None:
            offload, answer = self._offload(run, route)
        # The answer is this request's own and not handed out yet: its latency is set in place (a copy by
        # dataclasses.replace costs microseconds, several percent of a small model's whole run).
        object.__setattr__(answer, "latency_ms", (clock() - start) * 1e3)
        self._counters.count(answer, offload)
        if self._auditor is not None:
            self._auditor.record(run.candidates, run.tensors, answer)
        return answer

    def _head(self, run: _Run, route: Route) -> Answer | None:
        """Run the segments before the split: a confident exit's answer, the full model's at split ``n``, or
        ``None`` (offload)."""
        tensors, check_exits = run.tensors, route.exits
        for i, (session, name, gate) in enumerate(self._stages[: route.split]):  # _step's work, inlined: the hot loop
            tensors.append(session.run(None, {name: tensors[i]})[0])
            if check_exits and gate is not None:
                answer = self._evaluate(run, i)
                if answer is not None:
                    return answer
        return self._full(run) if route.split == self._n else None

    def _step(self, run: _Run, check_exits: bool) -> Answer | None:
        """Run the next segment (and its exit head when ``check_exits``): the exit's answer when confident."""
        tensors = run.tensors
        if not tensors:  # an image codec's route fell back: the edge preprocesses its frame after all
            assert run.frame is not None
            tensors.append(self.inputs.preprocess(run.frame))
        i = len(tensors) - 1
        session, name, gate = self._stages[i]
        tensors.append(session.run(None, {name: tensors[i]})[0])
        if check_exits and gate is not None:
            return self._evaluate(run, i)
        return None

    def _evaluate(self, run: _Run, i: int) -> Answer | None:
        """Evaluate the exit head after segment ``i``; keep it as a candidate; its answer when confident."""
        gate = self._exits[i]
        p, label, top = top_class(gate.session.run(None, {gate.input_name: run.tensors[i + 1]})[0][0])
        crit = gate.criterion
        score = top if type(crit) is MaxSoftmax else float(crit.score(p))  # the top probability is max-softmax's
        answer = _local_answer(label, top, "exit", p, i + 1, gate.spec.name)
        run.candidates.append((score if crit.higher_is_confident else -score, answer))
        return answer if confident(crit, score, run.thresholds[i]) else None  # type: ignore[arg-type]

    def _full(self, run: _Run, degraded: str | None = None) -> Answer:
        p, label, top = top_class(run.tensors[-1][0])
        answer = _local_answer(label, top, "edge", p, self._n)
        return answer if degraded is None else replace(answer, degraded=degraded)

    def _offload(self, run: _Run, route: Route) -> tuple[Offload | None, Answer]:
        """Send the split tensor (unless the breaker is open); the cloud's answer or a local one."""
        assert self._cloud is not None
        if not self.breaker.allow():
            self._maybe_probe()
            return None, self._fallback(run, route, "breaker_open")
        cloud, name = self._cloud, self.manifest.split_point(route.split).tensor.name
        boundary = self.manifest.segments[route.split].input  # uint8 on an int8 edge: encode() knows
        sample = run.frame if route.codec.image and run.frame is not None else run.tensors[-1]
        if route.bottleneck:  # the code of the split tensor travels; run.tensors keep the tensor for a fallback
            encoder, code = self._encoders[route.split]  # it reads the split tensor by the split tensor's name
            sample, name = encoder.run(None, {name: sample})[0], code
        # once: a retry sends the same bytes (a code is float32 even on an int8 edge)
        wire = encode(route.codec, name, sample, None if route.bottleneck else boundary)
        offload = Offload(
            lambda timeout_s: cloud.send(route.split, wire, timeout_s, route.codec, bottleneck=route.bottleneck),
            run.deadline,
            breaker=self.breaker,
            retry=self.retry,
            rng=self._rng,
            clock=self._clock,
        )
        if self.race:
            return offload, self._race(run, route, offload)
        try:
            reply = offload.wait()
        except CloudError as err:
            return offload, self._fallback(run, route, err.reason, err)
        return offload, self._cloud_answer(reply, route)

    def _race(self, run: _Run, route: Route, offload: Offload) -> Answer:
        """Compute locally while the cloud works; the first acceptable answer before the deadline wins."""
        while run.done < self._n:
            try:
                reply = offload.poll()
            except CloudError as err:
                return self._fallback(run, route, err.reason, err)
            if reply is not None:
                return self._cloud_answer(reply, route)
            if self._clock() >= run.deadline:
                offload.cancel()
                return self._fallback(run, route, "deadline")
            answer = self._step(run, route.exits)
            if answer is not None:
                offload.cancel()
                return answer
        offload.cancel()
        return self._full(run)

    def _fallback(self, run: _Run, route: Route, reason: str, err: CloudError | None = None) -> Answer:
        """A local answer, degraded for ``reason``: run on while the deadline allows, then the best exit."""
        if reason == "rejected":
            log.warning("the cloud rejected a request; answering on the edge: %s", err)
        while run.done < self._n and self._clock() < run.deadline:
            answer = self._step(run, route.exits)
            if answer is not None:
                return replace(answer, degraded=reason)
        if run.done == self._n:
            return self._full(run, reason)
        return replace(self._best(run), degraded=reason)

    def _best(self, run: _Run) -> Answer:
        """The most confident exit evaluated; else the deepest exit head on a tensor at hand; else run on to the
        next exit head (or the end)."""
        while not run.candidates:
            heads = [i for i in self._exits if i < run.done and i + 1 < self._n]
            if heads:
                self._evaluate(run, max(heads))
            elif run.done < self._n:
                self._step(run, check_exits=False)
            else:
                return self._full(run)
        return max(run.candidates, key=lambda c: c[0])[1]

    def _maybe_probe(self) -> None:
        """Once the breaker's cool-down is over, one health check in the background decides whether it closes."""
        if self._cloud is None or not self.breaker.begin_probe():
            return
        threading.Thread(target=self._probe, args=(self._cloud,), name="edgesplit-probe", daemon=True).start()

    def _probe(self, cloud: CloudClient) -> None:
        ok = cloud.ready(self._probe_timeout_s)
        if not ok:
            cloud.reconnect()  # the next check starts on a fresh connection, not one a blackhole left stuck
        self.breaker.probe_result(ok)

    def _cloud_answer(self, reply: CloudReply, route: Route) -> Answer:
        wire = {"split": route.split, "bytes_sent": reply.bytes_sent, "codec": route.codec.name}
        probs, times = softmax(reply.logits), {"rpc_ms": reply.rpc_ms, "server_ms": reply.server_ms}
        return self._answer(probs, "cloud", route.split, **wire, **times)

    @staticmethod
    def _answer(probs: np.ndarray, source: str, segments_run: int, **extra: object) -> Answer:
        p = probs[0]
        label = int(p.argmax())
        return Answer(label, float(p[label]), source, p, segments_run, **extra)  # type: ignore[arg-type]
