"""The edge runtime: run segments, stop at the first confident exit, otherwise offload the split tensor.

Example:
    >>> runtime = EdgeRuntime(Bundle.load("bundle/"), cloud=CloudClient(...))   # doctest: +SKIP
    >>> answer = runtime.infer(image)                                           # doctest: +SKIP
    >>> answer.source, answer.exit, answer.confidence                          # doctest: +SKIP
    ('exit', 'exit0', 0.97)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edge.client import CloudClient
from edge.device import Session, slowed
from edge.errors import EdgeError
from edge.policy import Criterion, confident, criterion, softmax
from protos.bundle import Bundle, Exit
from protos.codecs import Codec

__all__ = ["Answer", "EdgeRuntime", "Route"]


@dataclass(frozen=True)
class Answer:
    """One prediction and where it came from.

    ``source`` is ``"exit"`` (an early exit on the edge, named by ``exit``), ``"edge"`` (the full model ran on
    the edge) or ``"cloud"`` (the tail ran in the cloud from split point ``split``; then ``bytes_sent`` and
    ``codec`` say what went on the wire, ``rpc_ms`` the round trip the edge saw and ``server_ms`` the cloud's
    own share of it).
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


@dataclass(frozen=True)
class Route:
    """Where the edge sends work: the split point, the wire codec, and whether exits are checked."""

    split: int
    codec: Codec
    exits: bool


@dataclass(frozen=True)
class _ExitGate:
    spec: Exit
    session: Session
    input_name: str
    criterion: Criterion


def _session(path: str, threads: int, slowdown: float = 1.0) -> Session:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return slowed(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), slowdown)


class EdgeRuntime:
    """Runs a bundle's head on the device; sessions are built once, here.

    Args:
        bundle: the bundle written by ``split/``.
        split: the split point (segments ``[0, split)`` run here); default: the manifest's.
        cloud: the cloud client; required unless ``split`` is the last split point (edge only).
        exits: whether early exits are checked (off for a plain split baseline).
        threads: ONNX Runtime intra-op threads (a device has few cores).
        codec: how the split tensor travels (``fp32``, ``int8+zstd`` …, see :mod:`protos.codecs`); default: the
            split point's codec in the manifest.
        slowdown: emulate a device this many times slower than this host (:mod:`edge.device`; 1 = the host).
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
    ) -> None:
        self.manifest = bundle.manifest
        self._n = len(self.manifest.segments)
        self._segments = [_session(str(bundle.file(s.file)), threads, slowdown) for s in self.manifest.segments]
        self._exits: dict[int, _ExitGate] = {}
        for spec in self.manifest.exits:
            session = _session(str(bundle.file(spec.file)), threads, slowdown)
            self._exits[spec.after_segment] = _ExitGate(
                spec, session, session.get_inputs()[0].name, criterion(spec.criterion)
            )
        self._cloud = cloud
        self._route = self._check(self.manifest.default_split if split is None else split, codec, exits)

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

    def set_route(self, split: int, codec: str, exits: bool) -> Route:
        """Switch split point, codec and exits at once, without a restart; requests in flight finish on the old
        route, the next ones take the new one. Returns the new route."""
        self._route = self._check(split, codec, exits)
        return self._route

    def _check(self, split: int, codec: str | None, exits: bool) -> Route:
        point = self.manifest.split_point(split)
        if split < self._n and self._cloud is None:
            raise EdgeError(
                f"split point {split} offloads to the cloud but no cloud client was given;"
                f" use split {self._n} for edge-only"
            )
        chosen = Codec.parse(codec or point.codec)
        if split < self._n and chosen.format not in point.tails:
            raise EdgeError(f"split point {split} has no tail for {chosen.format!r}; formats: {sorted(point.tails)}")
        return Route(split, chosen, exits)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        sample = self.manifest.input.sample_shape
        if x.shape == sample:
            x = x[None]
        if x.shape[1:] != sample or x.shape[0] != 1:
            raise ValueError(
                f"input must have shape {list(sample)} or [1, {', '.join(map(str, sample))}], got {list(x.shape)}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def infer(self, x: np.ndarray) -> Answer:
        """Answer one sample: from the first confident exit, the edge's full model, or the cloud."""
        route = self._route  # one read: a concurrent switch never mixes two routes in one request
        split = route.split
        x = self._prepare(x)
        for i in range(split):
            x = self._segments[i].run(None, {self.manifest.segments[i].input.name: x})[0]
            gate = self._exits.get(i) if route.exits else None
            if gate is not None and i + 1 < self._n:
                probs = softmax(gate.session.run(None, {gate.input_name: x})[0])
                if confident(gate.criterion, gate.criterion.score(probs), gate.spec.threshold)[0]:
                    return self._answer(probs, "exit", i + 1, exit=gate.spec.name)
        if split == self._n:
            return self._answer(softmax(x), "edge", split)
        assert self._cloud is not None
        sp = self.manifest.split_point(split)
        reply = self._cloud.infer(split, sp.tensor.name, x, codec=route.codec)
        return self._answer(
            softmax(reply.logits),
            "cloud",
            split,
            split=split,
            bytes_sent=reply.bytes_sent,
            codec=route.codec.name,
            rpc_ms=reply.rpc_ms,
            server_ms=reply.server_ms,
        )

    @staticmethod
    def _answer(probs: np.ndarray, source: str, segments_run: int, **extra: object) -> Answer:
        p = probs[0]
        label = int(p.argmax())
        return Answer(label, float(p[label]), source, p, segments_run, **extra)  # type: ignore[arg-type]
