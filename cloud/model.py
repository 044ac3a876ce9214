"""One served model version: a bundle's fused tails in ONNX Runtime sessions (built once, at load), each behind a
:class:`~cloud.batcher.Batcher`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cloud.batcher import BatchConfig, Batcher
from cloud.bottleneck import Session, bottleneck_tail
from cloud.errors import FailedPrecondition, InvalidArgument
from cloud.images import ImageInput
from protos.bundle import IMAGE_FORMATS, WIRE_FORMATS, Bundle, Manifest
from protos.codecs import Codec
from protos.tensors import DATATYPES

__all__ = ["TailModel"]


_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(int64)": "INT64",  # a text tail's token ids and attention mask
}


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: np.dtype
    datatype: str
    shape: tuple[int | None, ...]  # None: the batch dimension

    def check(self, array: np.ndarray, max_batch: int) -> None:
        if array.dtype != self.dtype:
            raise InvalidArgument(f"input {self.name!r}: datatype must be {self.datatype}, got {array.dtype}")
        want = ", ".join("N" if d is None else str(d) for d in self.shape)
        fits = array.ndim == len(self.shape) and all(
            d is None or d == a for d, a in zip(self.shape, array.shape, strict=True)
        )
        if not fits:
            raise InvalidArgument(f"input {self.name!r}: shape must be [{want}], got {list(array.shape)}")
        if self.shape and self.shape[0] is None and not 1 <= array.shape[0] <= max_batch:
            raise InvalidArgument(f"input {self.name!r}: batch size {array.shape[0]} not in 1..{max_batch}")
        if array.dtype.kind == "f" and not np.isfinite(array.sum(dtype=np.float64)):  # one pass, no copy
            raise InvalidArgument(f"input {self.name!r}: contains NaN or infinity")


BatchObserver = Callable[[str, str, int, float], None]
"""Called with (model, version, samples, seconds) after every ONNX Runtime run."""


@dataclass(frozen=True)
class _Tail:
    inputs: tuple[_Input, ...]
    batcher: Batcher
    run: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    name_set: frozenset[str]  # built once: a request's inputs are compared with it, not re-sorted each time

    @property
    def names(self) -> list[str]:
        """The input names, in the session's order (for messages)."""
        return [i.name for i in self.inputs]

    @classmethod
    def load(
        cls,
        session: Session,
        batching: BatchConfig,
        on_batch: Callable[[int, float], None],
        executor: Executor | None,
    ) -> _Tail:
        inputs = []
        for arg in session.get_inputs():
            datatype = _ORT_TYPES[arg.type]
            shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
            inputs.append(_Input(arg.name, DATATYPES[datatype], datatype, shape))
        batched = [i.name for i in inputs if i.shape and i.shape[0] is None]

        def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
            return session.run(None, feeds)[0]

        return cls(
            tuple(inputs), Batcher(run, batched, batching, on_batch, executor), run, frozenset(i.name for i in inputs)
        )


def _session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_options(threads: int) -> ort.SessionOptions:
    """ONNX Runtime options for a server: ``threads`` intra-op threads (0: all cores), no spinning between runs
    (idle spinning threads would take the cores that the gRPC threads need)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class TailModel:
    """One bundle served as one model version: a fused tail per split point and wire format, chosen per request.
    Where split point 0 takes encoded images (:mod:`cloud.images`), they are decoded and preprocessed, then run
    by the fp32 tail.

    Args:
        bundle: the loaded (verified) bundle.
        version: the version it is served as.
        threads: ONNX Runtime intra-op threads per session (0: all cores).
        batching: how requests for one tail are batched.
        max_batch: the largest batch one request may carry.
        on_batch: told about every batched ONNX Runtime run (for metrics).
        executor: the threads batches run in (default: the event loop's).
    """

    def __init__(
        self,
        bundle: Bundle,
        version: str = "1",
        threads: int = 0,
        batching: BatchConfig | None = None,
        max_batch: int = 1024,
        on_batch: BatchObserver | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.version = version
        self.max_batch = max_batch
        options = session_options(threads)
        batching = batching or BatchConfig()
        name = self.manifest.model

        def observe(samples: int, seconds: float) -> None:
            if on_batch is not None:
                on_batch(name, version, samples, seconds)

        self._tails: dict[tuple[int, str], _Tail] = {}
        self._bottlenecks: dict[tuple[int, str], _Tail] = {}  # per format a bottleneck's decoder + fp32 tail
        self._by_input: dict[str, int] = {}
        self._executor = executor
        first = self.manifest.split_points[0]
        self._images = ImageInput(bundle, first.images, threads) if first.images else None
        for sp in self.manifest.split_points:
            sessions = {fmt: _session(bundle.file(file), options) for fmt, file in sp.tails.items()}
            for fmt, session in sessions.items():
                self._tails[sp.index, fmt] = _Tail.load(session, batching, observe, executor)
            if sp.tail is not None:
                self._by_input[sp.tensor.name] = sp.index
            for fmt in sp.bottleneck.files if sp.bottleneck is not None else ():  # decoder -> the same fp32 tail
                session = bottleneck_tail(bundle, sp.index, fmt, options, sessions["fp32"])
                self._bottlenecks[sp.index, fmt] = _Tail.load(session, batching, observe, executor)

    @property
    def name(self) -> str:
        """The model name requests use."""
        return self.manifest.model

    @property
    def content_hash(self) -> str:
        """The bundle's content hash."""
        return self.manifest.content_hash

    @property
    def queue_depth(self) -> int:
        """Samples waiting in this model's batch queues."""
        return sum(tail.batcher.depth for tail in (*self._tails.values(), *self._bottlenecks.values()))

    @property
    def splits(self) -> list[int]:
        """Split points this model can continue from."""
        return sorted({split for split, _ in self._tails})

    def formats(self, split: int) -> list[str]:
        """The wire formats the tail at ``split`` accepts."""
        return [fmt for fmt in WIRE_FORMATS if (split, fmt) in self._tails]

    def close(self) -> None:
        """Retire: queued requests still run; later ones run unbatched (nothing is dropped)."""
        for tail in (*self._tails.values(), *self._bottlenecks.values()):
            tail.batcher.close()

    def check_hash(self, content_hash: object) -> None:
        """FAILED_PRECONDITION unless ``content_hash`` is absent or equals the bundle's."""
        if content_hash is not None and content_hash != self.manifest.content_hash:
            raise FailedPrecondition(
                f"bundle hash {content_hash!r} does not match the served bundle {self.manifest.content_hash!r}"
                f" of model {self.name!r} version {self.version!r}: edge and cloud must load the same bundle"
            )

    def resolve_split(self, split: object, inputs: Mapping[str, np.ndarray]) -> int:
        """The split point asked for, or the one whose boundary tensor is the first input."""
        if not inputs:
            raise InvalidArgument("the request has no input tensors")
        if split is None:
            name = next(iter(inputs))
            if name not in self._by_input:
                raise InvalidArgument(f"unknown input {name!r}; valid inputs: {sorted(self._by_input)}")
            return self._by_input[name]
        if isinstance(split, bool) or not isinstance(split, int) or split not in self.splits:
            raise InvalidArgument(f"unknown split point {split!r}; valid split points: {self.splits}")
        return split

    @property
    def bottleneck_splits(self) -> list[int]:
        """Split points whose learned bottleneck this model serves."""
        return sorted({split for split, _ in self._bottlenecks})

    def infer(
        self, split: int, inputs: Mapping[str, np.ndarray], codec: object = None, bottleneck: object = None
    ) -> np.ndarray:
        """Run the tail from ``split`` for wire format ``codec`` (default fp32) on the inputs, here and now (no
        batching); the class logits. ``bottleneck``: the inputs are the code of the split point's bottleneck."""
        image = self._image_codec(split, codec)
        if image is not None:
            inputs, codec = self._decode(image, inputs), None
        tail, feeds = self._prepare(split, inputs, codec, bottleneck)
        return tail.run(feeds)

    async def infer_async(
        self,
        split: int,
        inputs: Mapping[str, np.ndarray],
        codec: object = None,
        timeout: float | None = None,
        bottleneck: object = None,
    ) -> np.ndarray:
        """As :meth:`infer`, batched with other requests for the same tail; ``timeout`` bounds the wait. Images
        are decoded and preprocessed in the executor, not on the event loop."""
        image = self._image_codec(split, codec)
        if image is not None:
            loop = asyncio.get_running_loop()
            inputs, codec = await loop.run_in_executor(self._executor, self._decode, image, inputs), None
        tail, feeds = self._prepare(split, inputs, codec, bottleneck)
        return await tail.batcher.infer(feeds, timeout)

    def _image_codec(self, split: int, codec: object) -> Codec | None:
        """The image codec asked for (``png``, ``jpeg<Q>``), else None; INVALID_ARGUMENT where it cannot be."""
        if not isinstance(codec, str) or not codec.startswith(IMAGE_FORMATS):
            return None
        try:
            parsed = Codec.parse(codec)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if split != 0 or self._images is None:
            raise InvalidArgument(
                f"codec {codec!r} sends an encoded image, which only split point 0 of a bundle with image"
                f" preprocessing takes; split point {split} takes wire formats {self.formats(split)}"
            )
        return parsed

    def _decode(self, codec: Codec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._images is not None
        return {self.manifest.split_points[0].tensor.name: self._images.model_input(inputs, codec, self.max_batch)}

    def _prepare(
        self, split: int, inputs: Mapping[str, np.ndarray], codec: object, bottleneck: object = None
    ) -> tuple[_Tail, dict[str, np.ndarray]]:
        """The tail and its feeds, every input checked (before it may join a batch)."""
        tail = self._tail(split, codec, bottleneck)
        if len(inputs) != len(tail.name_set) or not tail.name_set.issuperset(inputs):
            raise InvalidArgument(
                f"split point {split} with codec {codec or 'fp32'!r} takes inputs {tail.names}, got {list(inputs)}"
            )
        batch = None
        for spec in tail.inputs:
            array = inputs[spec.name]
            spec.check(array, self.max_batch)
            if spec.shape and spec.shape[0] is None:
                if batch is not None and array.shape[0] != batch:
                    raise InvalidArgument(f"input {spec.name!r}: batch size {array.shape[0]} != {batch} of the others")
                batch = array.shape[0]
        return tail, {spec.name: inputs[spec.name] for spec in tail.inputs}

    def _tail(self, split: int, codec: object, bottleneck: object = None) -> _Tail:
        if bottleneck is not None and not isinstance(bottleneck, bool):
            raise InvalidArgument(f"parameter 'edgesplit.bottleneck' must be a bool, got {type(bottleneck).__name__}")
        if codec is None:
            fmt = "fp32"
        elif not isinstance(codec, str):
            raise InvalidArgument(f"parameter 'edgesplit.codec' must be a string, got {type(codec).__name__}")
        else:
            fmt = codec.partition("+")[0]  # a compressor is undone per tensor, before this
        if bottleneck:
            return self._bottleneck_tail(split, fmt)
        tail = self._tails.get((split, fmt))
        if tail is None:
            raise InvalidArgument(f"split point {split} takes no wire format {fmt!r}; valid: {self.formats(split)}")
        return tail

    def _bottleneck_tail(self, split: int, fmt: str) -> _Tail:
        tail = self._bottlenecks.get((split, fmt))
        if tail is not None:
            return tail
        if split not in self.bottleneck_splits:
            have = self.bottleneck_splits
            raise InvalidArgument(
                f"split point {split} has no bottleneck; split points with one: {have if have else 'none'}"
            )
        formats = [f for f in WIRE_FORMATS if (split, f) in self._bottlenecks]
        raise InvalidArgument(f"split point {split}'s bottleneck takes no wire format {fmt!r}; valid: {formats}")
