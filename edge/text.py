"""The edge's runtime for text bundles: tokenize on the device, run encoder layers, exit early or offload.

A text bundle (``preprocessing.kind == "text"``, written by ``split.textexport``) has one segment per encoder
layer, each taking the hidden states and the attention mask, and an exit after every layer but the last. A
request is one text: the bundle's tokenizer (``tokenizer.json``, Hugging Face ``tokenizers``, torch-free; the
``text`` extra) turns it into token ids without padding, so the mask is all ones. The runtime runs layers up to
the split point and checks each exit on the way with the bundle's policy: ``entropy`` (DeeBERT: exit when the
entropy is at most the exit's calibrated threshold) or ``patience`` (PABEE: exit when the answer has not changed
for ``K`` layers, :mod:`edge.patience`). If none fires it sends the hidden states and the mask to the cloud
(:class:`~edge.client.CloudClient`); if the cloud fails, it goes on locally from the split point and says why in
:attr:`Answer.degraded`. Sessions are built once; a request makes no copies of the hidden states.

This module composes the image runtime's parts (client, codecs, :class:`~edge.runtime.Answer`, the error
reasons) rather than changing :mod:`edge.runtime`, whose hot path is the image bundles'.

Example:
    >>> runtime = TextRuntime(Bundle.load("text-bundle/"))                # doctest: +SKIP
    >>> runtime.infer("ls: cannot access 'x': No such file").label        # doctest: +SKIP
    12
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import onnxruntime as ort

from edge.client import CloudClient
from edge.errors import CloudError
from edge.patience import PatienceCounter
from edge.policy import Entropy, top_class
from edge.runtime import Answer
from protos.bundle import Bundle, BundleError
from protos.codecs import Codec, encode
from protos.texttok import TextTokenizer

__all__ = ["POLICIES", "TextRuntime", "is_text_bundle"]

POLICIES = ("entropy", "patience")
_ENTROPY = Entropy()


def is_text_bundle(bundle: Bundle) -> bool:
    """Whether ``bundle`` is a text bundle."""
    return bundle.manifest.preprocessing.get("kind") == "text"


def _session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class TextRuntime:
    """Runs a text bundle on the device (see the module docstring).

    Args:
        bundle: a text bundle.
        client: the cloud; None runs everything on the device (``split`` must then be the last split point).
        split: the split point (default: the bundle's); the edge runs layers ``[0, split)``.
        codec: the wire codec for the hidden states (``fp32`` or ``fp16``).
        policy: ``entropy`` or ``patience`` (default: the bundle's); ``patience`` its K (default: the bundle's).
        threads: ONNX Runtime intra-op threads per session.
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
        threads: int = 1,
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
        self.mask_name = str(pre["mask"])
        self.tokenizer = TextTokenizer.load(bundle.file(str(pre["tokenizer"])), int(pre["max_length"]))
        self._segments = [_session(str(bundle.edge_file(s.file)), threads) for s in m.segments]
        self._inputs = [s.input.name for s in m.segments]
        self._exits = {
            e.after_segment: (e.name, e.threshold, _session(str(bundle.edge_file(e.file)), threads)) for e in m.exits
        }

    def infer(self, text: str) -> Answer:
        """One text's answer: from an exit, the full model on the device, or the cloud."""
        start = time.perf_counter()
        ids, mask = self.tokenizer.encode_one(text)
        counter = PatienceCounter(self.patience) if self.policy == "patience" else None
        answer, hidden = self._run(ids, mask, 0, self.split, counter)
        if answer is None:
            answer = self._offload(hidden, mask, counter)
        return replace(answer, latency_ms=(time.perf_counter() - start) * 1e3)

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
            name, threshold, session = self._exits[k]
            probs, label, conf = top_class(session.run(None, {self._inputs[k + 1]: x})[0][0])
            fire = counter.step(label) if counter is not None else _ENTROPY.score(probs[None])[0] <= threshold
            if fire:
                return Answer(label, conf, "exit", probs, k + 1, exit=name), x
        return None, x

    def _offload(self, hidden: np.ndarray, mask: np.ndarray, counter: PatienceCounter | None) -> Answer:
        assert self.client is not None
        sp = self.manifest.split_point(self.split)
        wire = encode(self.codec, sp.tensor.name, hidden) if self.split else {sp.tensor.name: hidden}
        wire[self.mask_name] = mask
        try:
            reply = self.client.send(self.split, wire, codec=self.codec).result()
        except CloudError as err:
            answer, _ = self._run(hidden, mask, self.split, len(self._segments), counter)
            assert answer is not None
            return replace(answer, degraded=err.reason)
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
