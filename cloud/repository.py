"""The models the cloud serves: each bundle's fused tails in ONNX Runtime sessions, built once at load."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cloud.errors import FailedPrecondition, InvalidArgument, ModelNotFound
from protos.bundle import WIRE_FORMATS, Bundle, Manifest
from protos.tensors import DATATYPES

__all__ = ["ModelRepository", "TailModel"]

VERSION = "1"


_ORT_TYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8"}


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


@dataclass(frozen=True)
class _Tail:
    session: ort.InferenceSession
    inputs: tuple[_Input, ...]

    @classmethod
    def load(cls, path: Path, options: ort.SessionOptions) -> _Tail:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = []
        for arg in session.get_inputs():
            datatype = _ORT_TYPES[arg.type]
            shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
            inputs.append(_Input(arg.name, DATATYPES[datatype], datatype, shape))
        return cls(session, tuple(inputs))


class TailModel:
    """One bundle served as one model: a fused tail per split point and wire format, chosen per request."""

    def __init__(self, bundle: Bundle, threads: int = 0, max_batch: int = 1024) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.max_batch = max_batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._tails: dict[tuple[int, str], _Tail] = {}
        self._by_input: dict[str, int] = {}
        for sp in self.manifest.split_points:
            for fmt, file in sp.tails.items():
                self._tails[sp.index, fmt] = _Tail.load(bundle.file(file), options)
            if sp.tail is not None:
                self._by_input[sp.tensor.name] = sp.index

    @property
    def name(self) -> str:
        """The model name requests use."""
        return self.manifest.model

    @property
    def splits(self) -> list[int]:
        """Split points this model can continue from."""
        return sorted({split for split, _ in self._tails})

    def formats(self, split: int) -> list[str]:
        """The wire formats the tail at ``split`` accepts."""
        return [fmt for fmt in WIRE_FORMATS if (split, fmt) in self._tails]

    def check_hash(self, content_hash: object) -> None:
        """FAILED_PRECONDITION unless ``content_hash`` is absent or equals the bundle's."""
        if content_hash is not None and content_hash != self.manifest.content_hash:
            raise FailedPrecondition(
                f"bundle hash {content_hash!r} does not match the served bundle {self.manifest.content_hash!r}"
                f" of model {self.name!r}: edge and cloud must load the same bundle"
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

    def infer(self, split: int, inputs: Mapping[str, np.ndarray], codec: object = None) -> np.ndarray:
        """Run the tail from ``split`` for wire format ``codec`` (default fp32) on the inputs; the class logits."""
        tail = self._tail(split, codec)
        expected = [i.name for i in tail.inputs]
        if sorted(inputs) != sorted(expected):
            raise InvalidArgument(
                f"split point {split} with codec {codec or 'fp32'!r} takes inputs {expected}, got {list(inputs)}"
            )
        batch = None
        for spec in tail.inputs:
            array = inputs[spec.name]
            spec.check(array, self.max_batch)
            if spec.shape and spec.shape[0] is None:
                if batch is not None and array.shape[0] != batch:
                    raise InvalidArgument(f"input {spec.name!r}: batch size {array.shape[0]} != {batch} of the others")
                batch = array.shape[0]
        return tail.session.run(None, {name: inputs[name] for name in expected})[0]

    def _tail(self, split: int, codec: object) -> _Tail:
        if codec is None:
            fmt = "fp32"
        elif not isinstance(codec, str):
            raise InvalidArgument(f"parameter 'edgesplit.codec' must be a string, got {type(codec).__name__}")
        else:
            fmt = codec.partition("+")[0]  # a compressor is undone per tensor, before this
        tail = self._tails.get((split, fmt))
        if tail is None:
            raise InvalidArgument(f"split point {split} takes no wire format {fmt!r}; valid: {self.formats(split)}")
        return tail


class ModelRepository:
    """Models by name (one version each for now)."""

    def __init__(self, models: Iterable[TailModel]) -> None:
        self._models = {m.name: m for m in models}

    @classmethod
    def from_bundles(cls, paths: Iterable[str | Path], threads: int = 0) -> ModelRepository:
        """Load and verify each bundle directory."""
        return cls(TailModel(Bundle.load(p), threads) for p in paths)

    def names(self) -> list[str]:
        """Served model names."""
        return sorted(self._models)

    def get(self, name: str, version: str = "") -> TailModel:
        """The model ``name`` (``version`` empty or ``"1"``); NOT_FOUND listing the served names otherwise."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}; served models: {self.names()}")
        if version not in ("", VERSION):
            raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: [{VERSION!r}]")
        return model
