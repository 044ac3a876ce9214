"""The edge's runtime for text bundles: tokenize on the device, run encoder layers, exit early or offload.

A text bundle (``preprocessing.kind == "text"``, written by ``split.textexport``) has one segment per encoder
layer, each taking the hidden states and the attention mask, and an exit after every layer but the last. A
request is one text: the bundle's tokenizer (``tokenizer.json``, Hugging Face ``tokenizers``, torch-free; the
``text`` extra) turns it into token ids without padding, so the mask is all ones. The runtime runs layers up to
the split point and checks each exit on the way with the bundle's policy: ``entropy`` (DeeBERT: exit when the
entropy is at most the exit's calibrated threshold) or ``patience`` (PABEE: exit when the answer has not changed
for ``K`` layers, :mod:`edge.patience`). If none fires it sends the hidden states and the mask to the cloud
(:class:`~edge.client.CloudClient`) within the request's deadline, as the image runtime does: the cloud call gets the
time left as its gRPC timeout, transient failures are retried while the deadline and the retry policy allow
(:class:`~edge.offload.Offload`, :mod:`edge.retry`), and a circuit breaker (:mod:`edge.breaker`) keeps requests
local while the cloud fails (a background health check closes it again). When the cloud does not answer, the edge
goes on locally from the split point with the same policy and says why in :attr:`Answer.degraded` (a reason of
:data:`edge.errors.REASONS`); it finishes the layers even past the deadline (each is a millisecond or two on a
phone: a late answer beats none). :meth:`TextRuntime.stats` counts as :meth:`edge.runtime.EdgeRuntime.stats`
does. Sessions are built once; a request makes no copies of the hidden states.

This module composes the image runtime's parts (client, codecs, :class:`~edge.runtime.Answer`, the error
reasons) rather than changing :mod:`edge.runtime`, whose hot path is the image bundles'.

Example:
    >>> runtime = TextRuntime(Bundle.load("text-bundle/"))                # doctest: +SKIP
    >>> runtime.infer("ls: cannot access 'x': No such file").label        # doctest: +SKIP
    12
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort

from edge.breaker import CircuitBreaker
from edge.client import CloudClient, CloudReply
from edge.errors import CloudError
from edge.offload import Offload
from edge.patience import PatienceCounter
from edge.policy import Entropy, top_class
from edge.retry import RetryPolicy
from edge.runtime import Answer, Counters
from protos.bundle import Bundle, BundleError
from protos.codecs import Codec, encode
from protos.texttok import TextTokenizer

__all__ = ["POLICIES", "TextRuntime", "is_text_bundle"]

POLICIES = ("entropy", "patience")
_ENTROPY = Entropy()
log = logging.getLogger("edgesplit.edge")


def is_text_bundle(bundle: Bundle) -> bool:
    """Whether ``bundle`` is a text bundle."""
    return bundle.manifest.preprocessing.get("kind") == "text"


def _session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _deadline_s(deadline_ms: float) -> float:
    if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int | float) or not deadline_ms > 0:
        raise ValueError(f"deadline_ms must be a positive number of milliseconds, got {deadline_ms!r}")
    return float(deadline_ms) / 1e3


class TextRuntime:
    """Runs a text bundle on the device (see the module docstring). Thread-safe.

    Args:
        bundle: a text bundle.
        client: the cloud; None runs everything on the device (``split`` must then be the last split point).
        split: the split point (default: the bundle's); the edge runs layers ``[0, split)``.
        codec: the wire codec for the hidden states (``fp32`` or ``fp16``).
        policy: ``entropy`` or ``patience`` (default: the bundle's); ``patience`` its K (default: the bundle's).
        exits: whether exits are checked (off: every text runs the layers up to the split, as the planner's
            "no exits" routes).
        threads: ONNX Runtime intra-op threads per session.
        deadline_ms: each request's deadline, from the call to :meth:`infer` (which may override it).
        breaker: the circuit breaker (default: 3 failures open it for 2 s).
        retry: how transient failures are retried (default: :class:`~edge.retry.RetryPolicy`'s).
        rng: the random source of the retry jitter.
        probe_timeout_s: the health check's timeout once the breaker's cool-down is over.
    """

    def __init__(
        self,
        bundle: Bundle,
        client: CloudClient | None = None,
        *,
        split: int | None = None,
        codec: str = "fp32",
        policy: str | None = None,
        patience: int | None = None,
        exits: bool = True,
        threads: int = 1,
        deadline_ms: float = 1000.0,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        probe_timeout_s: float = 0.5,
    ) -> None:
        if not is_text_bundle(bundle):
            raise BundleError(f"bundle {bundle.root} is not a text bundle (preprocessing kind is not 'text')")
        m = bundle.manifest
        pre = m.preprocessing
        self.manifest, self.client = m, client
        self.split = m.default_split if split is None else m.split_point(split).index
        if client is None and self.split < len(m.segments):
            raise ValueError(
                f"split point {self.split} offloads, so it needs a client; without one use {len(m.segments)}"
            )
        self.codec = Codec.parse(codec)
        if self.split and self.codec.format not in m.split_point(self.split).tails and self.split < len(m.segments):
            raise ValueError(f"codec {codec!r}: split point {self.split} takes {list(m.split_point(self.split).tails)}")
        rule = dict(pre.get("policy", {}))
        self.policy = policy or str(rule.get("criterion", "entropy"))
        if self.policy not in POLICIES:
            raise ValueError(f"unknown text exit policy {self.policy!r}; valid policies: {list(POLICIES)}")
        self.patience = int(patience if patience is not None else rule.get("patience", 2))
        PatienceCounter(self.patience)  # validates
        self.exits = exits
        self._deadline_s = _deadline_s(deadline_ms)
        self.breaker = breaker or CircuitBreaker()
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._probe_timeout_s = probe_timeout_s
        self._clock = time.monotonic
        self._counters = Counters()
        self.mask_name = str(pre["mask"])
        self.tokenizer = TextTokenizer.load(bundle.file(str(pre["tokenizer"])), int(pre["max_length"]))
        self._segments = [_session(str(bundle.edge_file(s.file)), threads) for s in m.segments]
        self._inputs = [s.input.name for s in m.segments]
        self._exits = {
            e.after_segment: (e.name, e.threshold, _session(str(bundle.edge_file(e.file)), threads)) for e in m.exits
        }

    def infer(self, text: str, deadline_ms: float | None = None) -> Answer:
        """One text's answer: from an exit, the full model on the device, or the cloud; when the cloud fails it,
        from the edge, degraded. ``deadline_ms`` overrides the runtime's."""
        start = self._clock()
        deadline = start + (self._deadline_s if deadline_ms is None else _deadline_s(deadline_ms))
        ids, mask = self.tokenizer.encode_one(text)
        counter = PatienceCounter(self.patience) if self.policy == "patience" else None
        answer, hidden = self._run(ids, mask, 0, self.split, counter)
        offload: Offload | None = None
        if answer is None:
            offload, answer = self._offload(hidden, mask, counter, deadline)
        answer = replace(answer, latency_ms=(self._clock() - start) * 1e3)
        self._counters.count(answer, offload)
        return answer

    def stats(self) -> dict[str, Any]:
        """Counters, as :meth:`edge.runtime.EdgeRuntime.stats`: ``requests``, ``answers`` by source, ``exits`` per
        exit, ``offloads`` (tries sent), ``retries``, ``fallbacks`` by reason, ``bytes_sent``, ``latency_ms``,
        ``breaker`` (``state``, times ``opened``)."""
        values = self._counters.snapshot()
        values["breaker"] = {"state": self.breaker.state, "opened": self.breaker.opened}
        return values

    def _run(
        self, x: np.ndarray, mask: np.ndarray, start: int, stop: int, counter: PatienceCounter | None
    ) -> tuple[Answer | None, np.ndarray]:
        """Layers ``[start, stop)`` with their exits: an answer if one fires (or the last layer ran), else the
        hidden states at ``stop``."""
        last = len(self._segments) - 1
        for k in range(start, stop):
            x = self._segments[k].run(None, {self._inputs[k]: x, self.mask_name: mask})[0]
            if k == last:
                probs, label, conf = top_class(x[0])
                return Answer(label, conf, "edge", probs, k + 1), x
            if not self.exits:
                continue
            name, threshold, session = self._exits[k]
            probs, label, conf = top_class(session.run(None, {self._inputs[k + 1]: x})[0][0])
            fire = counter.step(label) if counter is not None else _ENTROPY.score(probs[None])[0] <= threshold
            if fire:
                return Answer(label, conf, "exit", probs, k + 1, exit=name), x
        return None, x

    def _offload(
        self, hidden: np.ndarray, mask: np.ndarray, counter: PatienceCounter | None, deadline: float
    ) -> tuple[Offload | None, Answer]:
        """Send the hidden states (unless the breaker is open) within the deadline; the cloud's or a local answer."""
        client = self.client
        assert client is not None
        if not self.breaker.allow():
            self._maybe_probe(client)
            return None, self._fallback(hidden, mask, counter, "breaker_open")
        sp = self.manifest.split_point(self.split)
        wire = encode(self.codec, sp.tensor.name, hidden) if self.split else {sp.tensor.name: hidden}
        wire[self.mask_name] = mask
        offload = Offload(
            lambda timeout_s: client.send(self.split, wire, timeout_s, self.codec),
            deadline,
            breaker=self.breaker,
            retry=self.retry,
            rng=self._rng,
            clock=self._clock,
        )
        try:
            reply = offload.wait()
        except CloudError as err:
            if err.reason == "rejected":
                log.warning("the cloud rejected a text request; answering on the edge: %s", err)
            return offload, self._fallback(hidden, mask, counter, err.reason)
        return offload, self._cloud_answer(reply)

    def _fallback(self, hidden: np.ndarray, mask: np.ndarray, counter: PatienceCounter | None, reason: str) -> Answer:
        """The layers past the split on the device, with the same policy; the answer says why (``reason``)."""
        answer, _ = self._run(hidden, mask, self.split, len(self._segments), counter)
        assert answer is not None  # the last layer always answers
        return replace(answer, degraded=reason)

    def _cloud_answer(self, reply: CloudReply) -> Answer:
        probs, label, conf = top_class(reply.logits[0])
        return Answer(
            label,
            conf,
            "cloud",
            probs,
            self.split,
            split=self.split,
            bytes_sent=reply.bytes_sent,
            codec=self.codec.name,
            rpc_ms=reply.rpc_ms,
            server_ms=reply.server_ms,
        )

    def _maybe_probe(self, client: CloudClient) -> None:
        """Once the breaker's cool-down is over, one health check in the background decides whether it closes."""
        if self.breaker.begin_probe():
            threading.Thread(target=self._probe, args=(client,), name="edgesplit-text-probe", daemon=True).start()

    def _probe(self, client: CloudClient) -> None:
        ok = client.ready(self._probe_timeout_s)
        if not ok:
            client.reconnect()  # the next check starts on a fresh connection
        self.breaker.probe_result(ok)
