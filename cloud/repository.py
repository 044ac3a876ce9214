"""The models the cloud serves: each bundle's fused tails in ONNX Runtime sessions, built once at load."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cloud.errors import FailedPrecondition, InvalidArgument, ModelNotFound
from protos.bundle import Bundle, Manifest, TensorSpec
from protos.tensors import DATATYPES

__all__ = ["ModelRepository", "TailModel"]

VERSION = "1"


@dataclass(frozen=True)
class _Tail:
    session: ort.InferenceSession
    spec: TensorSpec
    dtype: np.dtype


class TailModel:
    """One bundle served as one model: a fused tail per split point, chosen per request."""

    def __init__(self, bundle: Bundle, threads: int = 0, max_batch: int = 1024) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.max_batch = max_batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._tails: dict[int, _Tail] = {}
        self._by_input: dict[str, int] = {}
        for sp in self.manifest.split_points:
            if sp.tail is None:
                continue
            session = ort.InferenceSession(str(bundle.file(sp.tail)), options, providers=["CPUExecutionProvider"])
            self._tails[sp.index] = _Tail(session, sp.tensor, DATATYPES[sp.tensor.datatype])
            self._by_input[sp.tensor.name] = sp.index

    @property
    def name(self) -> str:
        """The model name requests use."""
        return self.manifest.model

    @property
    def splits(self) -> list[int]:
        """Split points this model can continue from."""
        return sorted(self._tails)

    def check_hash(self, content_hash: object) -> None:
        """FAILED_PRECONDITION unless ``content_hash`` is absent or equals the bundle's."""
        if content_hash is not None and content_hash != self.manifest.content_hash:
            raise FailedPrecondition(
                f"bundle hash {content_hash!r} does not match the served bundle {self.manifest.content_hash!r}"
                f" of model {self.name!r}: edge and cloud must load the same bundle"
            )

    def resolve_split(self, split: object, inputs: Mapping[str, np.ndarray]) -> int:
        """The split point asked for, or the one whose boundary tensor is the (single) input."""
        if len(inputs) != 1:
            raise InvalidArgument(f"expected exactly one input tensor, got {len(inputs)}: {list(inputs)}")
        if split is None:
            (name,) = inputs
            if name not in self._by_input:
                raise InvalidArgument(f"unknown input {name!r}; valid inputs: {sorted(self._by_input)}")
            return self._by_input[name]
        if isinstance(split, bool) or not isinstance(split, int) or split not in self._tails:
            raise InvalidArgument(f"unknown split point {split!r}; valid split points: {self.splits}")
        return split

    def infer(self, split: int, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the tail from ``split`` on the one input tensor; the class logits."""
        tail = self._tails[split]
        ((name, array),) = inputs.items()
        self._validate(tail, name, array)
        return tail.session.run(None, {tail.spec.name: array})[0]

    def _validate(self, tail: _Tail, name: str, array: np.ndarray) -> None:
        spec = tail.spec
        if name != spec.name:
            raise InvalidArgument(f"split point {self._by_input[spec.name]} takes input {spec.name!r}, got {name!r}")
        if array.dtype != tail.dtype:
            raise InvalidArgument(f"input {name!r}: datatype must be {spec.datatype}, got {array.dtype}")
        if array.ndim != len(spec.shape) or tuple(array.shape[1:]) != spec.sample_shape:
            raise InvalidArgument(
                f"input {name!r}: shape must be [N, {', '.join(map(str, spec.sample_shape))}], got {list(array.shape)}"
            )
        if not 1 <= array.shape[0] <= self.max_batch:
            raise InvalidArgument(f"input {name!r}: batch size {array.shape[0]} not in 1..{self.max_batch}")


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
