"""A learned bottleneck's tail in the cloud: its decoder for the wire format, then the split point's own fp32
tail, two ONNX Runtime sessions run one after the other as one (the bundle stores the decoders only, a few KB
each, instead of a copy of the tail per bottleneck and wire format).

The fp32 tail's session is the one the split point's plain route already runs (pass it in): nothing is loaded
twice. The decoder's output is the boundary tensor, named as the tail's input, and goes to the tail as it comes
(no copy). Bundles of the first bottlenecks hold fused tails instead (:attr:`protos.bundle.Bottleneck.fused`);
those load as one session.

Example:
    >>> session = bottleneck_tail(bundle, 2, "int8", options, tail=plain_fp32_session)     # doctest: +SKIP
    >>> logits = session.run(None, encode(Codec.parse("int8"), "b2_code", code))[0]       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from protos.bundle import Bundle

__all__ = ["ChainedSession", "Session", "bottleneck_tail"]


class Session(Protocol):
    """What runs a tail: an ``onnxruntime.InferenceSession`` or a :class:`ChainedSession`."""

    def get_inputs(self) -> Sequence[Any]: ...  # pragma: no cover

    def run(self, output_names: Any, input_feed: Mapping[str, np.ndarray]) -> list[Any]: ...  # pragma: no cover


class ChainedSession:
    """``decoder`` then ``tail`` as one session: its inputs are the decoder's, its outputs the tail's."""

    def __init__(self, decoder: ort.InferenceSession, tail: ort.InferenceSession) -> None:
        (restored,) = decoder.get_outputs()
        (feed,) = tail.get_inputs()
        if restored.name != feed.name:
            raise ValueError(f"the decoder outputs {restored.name!r} but the tail reads {feed.name!r}")
        self.decoder, self.tail, self._feed = decoder, tail, feed.name

    def get_inputs(self) -> Sequence[Any]:
        """The decoder's inputs (the code as the wire format carries it)."""
        return self.decoder.get_inputs()

    def run(self, output_names: Any, input_feed: Mapping[str, np.ndarray]) -> list[Any]:
        """The tail's outputs for the code in ``input_feed``."""
        (restored,) = self.decoder.run(None, input_feed)
        return self.tail.run(output_names, {self._feed: restored})


def _session(bundle: Bundle, rel: str, options: ort.SessionOptions | None) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle.file(rel)), options, providers=["CPUExecutionProvider"])


def bottleneck_tail(
    bundle: Bundle,
    split: int,
    fmt: str,
    options: ort.SessionOptions | None = None,
    tail: ort.InferenceSession | None = None,
) -> Session:
    """What the cloud runs for the code of split point ``split``'s bottleneck sent as wire format ``fmt``: the
    decoder chained to ``tail`` (the split point's fp32 tail; loaded here when not given), or a first bottleneck's
    fused tail. :class:`~protos.bundle.BundleError` where the split point has no bottleneck; ``KeyError`` for a
    wire format it does not take."""
    sp = bundle.manifest.split_point(split)
    bn = bundle.manifest.bottleneck(split)
    if bn.fused:
        return _session(bundle, bn.files[fmt], options)
    decoder = _session(bundle, bn.files[fmt], options)
    assert sp.tail is not None  # a bottleneck sits between two segments: there is a tail
    return ChainedSession(decoder, tail if tail is not None else _session(bundle, sp.tail, options))
