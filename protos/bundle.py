"""The bundle: the directory ``split/`` writes and ``edge/`` and ``cloud/`` read.

A bundle is self-describing: ``manifest.json`` names the ONNX files of the model's segments (edge), exits (edge)
and fused tails (cloud, one per split point), the tensor at every boundary, the calibrated exit thresholds and a
content hash over the artifact files. Nothing in a bundle is executable Python and nothing is pickled.

This module is torch-free and is the only bundle reader: edge and cloud share it through ``protos``.

Example:
    >>> bundle = Bundle.load("bundle/")                                  # doctest: +SKIP
    >>> bundle.manifest.split_point(2).tensor.shape                      # doctest: +SKIP
    (-1, 24, 8, 8)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "CRITERIA",
    "EDGE_PRECISIONS",
    "FORMAT_VERSION",
    "IMAGE_FORMATS",
    "MANIFEST",
    "WIRE_FORMATS",
    "Bottleneck",
    "Bundle",
    "BundleError",
    "Exit",
    "Manifest",
    "Segment",
    "SplitPoint",
    "TensorSpec",
    "content_hash",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CRITERIA = ("max_softmax", "entropy")
EDGE_PRECISIONS = ("fp32", "int8")
"""How the edge graphs (segments and exits) compute: float32, or int8 in QDQ form. An int8 edge's graphs pass
uint8 tensors to each other (each boundary's scale and zero point in the manifest); the model's input and the
logits stay float32."""
_DATATYPES = ("FP32", "FP16", "INT8", "UINT8", "INT32", "INT64", "BYTES")


class BundleError(ValueError):
    """A bundle is missing, malformed, or does not match what was asked of it."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BundleError(message)


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor at a boundary; ``-1`` marks the batch dimension.

    A quantized boundary (an int8 edge's) is ``UINT8`` with a ``scale`` and ``zero_point``: the real tensor is
    ``(q - zero_point) * scale``.
    """

    name: str
    shape: tuple[int, ...]
    datatype: str = "FP32"
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "tensor name must not be empty")
        _require(
            self.datatype in _DATATYPES, f"tensor {self.name!r}: datatype {self.datatype!r} is not one of {_DATATYPES}"
        )
        _require(all(d == -1 or d > 0 for d in self.shape), f"tensor {self.name!r}: bad shape {self.shape}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        quantized = self.scale is not None or self.zero_point is not None
        _require(
            not quantized or (self.datatype == "UINT8" and self.scale is not None and self.zero_point is not None),
            f"tensor {self.name!r}: a quantized boundary is UINT8 with both a scale and a zero point",
        )
        if quantized:
            _require(
                0 < float(self.scale) < float("inf") and 0 <= int(self.zero_point) <= 255,  # type: ignore[arg-type]
                f"tensor {self.name!r}: scale must be positive and finite, zero point in 0..255",
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (without the batch dimension)."""
        return self.shape[1:]

    @property
    def quantized(self) -> bool:
        """Whether the tensor travels between graphs as uint8 (with :attr:`scale` and :attr:`zero_point`)."""
        return self.scale is not None


@dataclass(frozen=True)
class Segment:
    """One piece of the model: ``input`` -> ``output``, stored as an ONNX file."""

    index: int
    file: str
    input: TensorSpec
    output: TensorSpec


@dataclass(frozen=True)
class Exit:
    """An early-exit classifier reading the output of segment ``after_segment``."""

    name: str
    after_segment: int
    file: str
    criterion: str = "max_softmax"
    threshold: float = 1.0
    calibration: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(
            self.criterion in CRITERIA, f"exit {self.name!r}: criterion {self.criterion!r} is not one of {CRITERIA}"
        )


WIRE_FORMATS = ("fp32", "fp16", "int8", "int8c")
"""How the split tensor travels: float32, float16, int8 affine per tensor, int8 affine per channel (axis 1)."""

IMAGE_FORMATS = ("jpeg", "png")
"""How split point 0 of an image bundle can travel instead: the device's frame as an encoded image, which the cloud
decodes and runs through the bundle's preprocessing graph and the fp32 tail (:mod:`protos.codecs`)."""


@dataclass(frozen=True)
class Bottleneck:
    """A learned bottleneck at a split point: the edge runs ``encoder`` (the boundary tensor -> ``code``, a few
    channels) and sends the code; the cloud runs a decoder (the code -> the boundary tensor), one per wire format in
    ``decoders``, and then the split point's own fp32 tail, so a bottleneck adds kilobytes, not a copy of the tail.
    ``codec``: the default codec of the code. ``training``: how encoder and decoder were trained (distillation from
    the frozen model; losses, samples, seconds). The split point stays usable without it: a route chooses
    (``bottleneck=True``).

    ``tails``: what the first bottleneck bundles (before ``decoders``) held instead, decoder + a copy of the fused
    tail per wire format; still read and served, never written (a bottleneck has one or the other)."""

    channels: int
    encoder: str
    code: TensorSpec
    decoders: Mapping[str, str] = field(default_factory=dict)
    codec: str = "int8"
    stride: int = 1
    training: Mapping[str, Any] = field(default_factory=dict)
    tails: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.channels > 0 and self.stride > 0, f"bottleneck: channels {self.channels} and stride"
                 f" {self.stride} must be positive")  # fmt: skip
        _require(bool(self.decoders) != bool(self.tails), "bottleneck: needs decoders (or, as the first bottleneck"
                 " bundles wrote, fused tails), not both")  # fmt: skip
        bad = sorted(set(self.files) - set(WIRE_FORMATS))
        _require(not bad, f"bottleneck: unknown wire formats {bad}; valid: {list(WIRE_FORMATS)}")
        _require("fp32" in self.files, "bottleneck: needs an fp32 decoder")
        _require(len(self.code.shape) >= 2 and self.code.shape[1] == self.channels,
                 f"bottleneck: code {self.code.shape} does not have {self.channels} channels")  # fmt: skip

    @property
    def files(self) -> Mapping[str, str]:
        """Per wire format the cloud's file that takes the code: a decoder, or (a first bottleneck) a fused tail."""
        return self.decoders or self.tails

    @property
    def fused(self) -> bool:
        """Whether the cloud's files are fused tails (the first bottleneck bundles) rather than decoders."""
        return not self.decoders

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bottleneck:
        """From the manifest's JSON."""
        return cls(int(data["channels"]), data["encoder"], _tensor(data["code"]), dict(data.get("decoders", {})),
                   data.get("codec", "int8"), int(data.get("stride", 1)), data.get("training", {}),
                   dict(data.get("tails", {})))  # fmt: skip


@dataclass(frozen=True)
class SplitPoint:
    """Execution moves to the cloud before segment ``index``: the edge runs segments ``[0, index)``.

    ``index == 0`` sends the raw input (cloud only); ``index == len(segments)`` never offloads (edge only, no
    tail). ``name`` is the boundary's name in the traced model (``input`` and ``output`` at the ends).
    ``tensor`` is the float32 tensor at the boundary; ``tails`` maps each wire format the cloud accepts
    (:data:`WIRE_FORMATS`) to the ONNX file of the fused tail that takes it; ``codec`` is the default codec,
    a wire format optionally followed by ``+zstd`` or ``+lz4``. ``images`` lists the :data:`IMAGE_FORMATS`
    the cloud also takes there (split point 0 of a bundle with image preprocessing only): the encoded frame
    travels, and the cloud decodes it, runs ``preprocess.onnx`` and the fp32 tail. ``bottleneck``: a learned
    bottleneck there (:class:`Bottleneck`; none: ``None``, and absent from the JSON).
    """

    index: int
    name: str
    tensor: TensorSpec
    codec: str = "fp32"
    tails: Mapping[str, str] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None
    images: tuple[str, ...] = ()
    bottleneck: Bottleneck | None = None

    def __post_init__(self) -> None:
        bad = sorted(set(self.tails) - set(WIRE_FORMATS))
        _require(not bad, f"split point {self.index}: unknown wire formats {bad}; valid: {list(WIRE_FORMATS)}")
        object.__setattr__(self, "images", tuple(self.images))
        bad = sorted(set(self.images) - set(IMAGE_FORMATS))
        _require(not bad, f"split point {self.index}: unknown image formats {bad}; valid: {list(IMAGE_FORMATS)}")
        _require(
            not self.images or (self.index == 0 and "fp32" in self.tails),
            f"split point {self.index}: only split point 0 (with an fp32 tail) takes encoded images",
        )

    @property
    def tail(self) -> str | None:
        """The float32 tail's file (None for the edge-only split point)."""
        return self.tails.get("fp32")


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to know about a bundle, validated on construction."""

    model: str
    family: str
    classes: tuple[str, ...]
    input: TensorSpec
    output: TensorSpec
    segments: tuple[Segment, ...]
    exits: tuple[Exit, ...]
    split_points: tuple[SplitPoint, ...]
    default_split: int
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    format_version: int = FORMAT_VERSION
    profile: Mapping[str, Any] = field(default_factory=dict)
    """Measured costs written by ``edgesplit profile`` (edge segment and exit latency, …); per split point they
    are in :attr:`SplitPoint.cost`. Not covered by the content hash: profiling does not change the model."""
    edge_precision: str = "fp32"
    """:data:`EDGE_PRECISIONS`: how the segments and exits were exported; the tails are always float32."""
    ort_format: Mapping[str, Any] = field(default_factory=dict)
    """The edge's graphs also in ONNX Runtime's ORT format, what ONNX Runtime Mobile loads (``export --edge-format
    ort``; empty: none): ``files`` maps each segment's, exit's and the preprocessing graph's ONNX file to its
    ``.ort`` file, ``operators`` names the operator configuration file of a reduced build
    (``--include_ops_by_config``), ``onnxruntime`` the version that wrote them, ``optimization`` the graph
    optimization level baked in. The edge loads the ``.ort`` files when there are; the content hash covers them.
    Absent from the JSON when empty, so bundles without are written as before."""

    def __post_init__(self) -> None:
        _require(
            self.format_version == FORMAT_VERSION,
            f"manifest format {self.format_version} is not supported (this reader knows {FORMAT_VERSION})",
        )
        _require(
            self.edge_precision in EDGE_PRECISIONS,
            f"edge precision {self.edge_precision!r} is not one of {EDGE_PRECISIONS}",
        )
        _require(bool(self.segments), "a bundle needs at least one segment")
        self._check_ort_format()
        _require(
            [s.index for s in self.segments] == list(range(len(self.segments))), "segments must be numbered 0..n-1"
        )
        for before, after in zip(self.segments, self.segments[1:], strict=False):
            _require(before.output == after.input, f"segment {after.index} input {after.input} != previous output")
        n = len(self.segments)
        for e in self.exits:
            _require(0 <= e.after_segment < n, f"exit {e.name!r}: after_segment {e.after_segment} not in 0..{n - 1}")
        _require(len({e.name for e in self.exits}) == len(self.exits), "exit names must be unique")
        for sp in self.split_points:
            _require(0 <= sp.index <= n, f"split point {sp.index} not in 0..{n}")
            _require(sp.tail is not None or sp.index == n, f"split point {sp.index} has no fp32 tail")
            _require(
                sp.bottleneck is None or 0 < sp.index < n,
                f"split point {sp.index}: a bottleneck sits between two segments (split points 1..{n - 1})",
            )
            _require(
                not sp.images or self.preprocessing.get("kind") == "image",
                f"split point {sp.index} takes encoded images {list(sp.images)} but the bundle has no image"
                " preprocessing to run on them",
            )
        self.split_point(self.default_split)

    def _check_ort_format(self) -> None:
        if not self.ort_format:
            return
        files = self.ort_format.get("files")
        _require(isinstance(files, Mapping) and bool(files), "ort_format: 'files' must map ONNX files to .ort files")
        edge = set(self.edge_files())
        stray = sorted(set(files) - edge)  # type: ignore[arg-type]
        _require(not stray, f"ort_format: {stray} are not edge graphs; edge graphs: {sorted(edge)}")
        bad = sorted(v for v in files.values() if not str(v).endswith(".ort"))  # type: ignore[union-attr]
        _require(not bad, f"ort_format: {bad} do not end in .ort")
        _require(isinstance(self.ort_format.get("operators"), str), "ort_format: 'operators' must name a file")

    def edge_files(self) -> tuple[str, ...]:
        """The ONNX files the edge runs: segments, exits, bottleneck encoders and the preprocessing graph (when
        there is one)."""
        files = [s.file for s in self.segments] + [e.file for e in self.exits]
        files += [sp.bottleneck.encoder for sp in self.split_points if sp.bottleneck is not None]
        graph = self.preprocessing.get("graph") if self.preprocessing.get("kind") == "image" else None
        return (*files, graph) if isinstance(graph, str) else tuple(files)

    def edge_file(self, rel: str) -> str:
        """What the edge loads for the ONNX file ``rel``: its ORT-format file when the bundle has one, else ``rel``."""
        return str(self.ort_format.get("files", {}).get(rel, rel)) if self.ort_format else rel

    @property
    def split_indices(self) -> tuple[int, ...]:
        """The valid split points, in order."""
        return tuple(sp.index for sp in self.split_points)

    @property
    def bottleneck_splits(self) -> tuple[int, ...]:
        """The split points that have a learned bottleneck, in order."""
        return tuple(sp.index for sp in self.split_points if sp.bottleneck is not None)

    def bottleneck(self, index: int) -> Bottleneck:
        """The bottleneck at split point ``index``; :class:`BundleError` listing the split points that have one."""
        found = self.split_point(index).bottleneck
        if found is None:
            have = list(self.bottleneck_splits)
            raise BundleError(
                f"split point {index} has no bottleneck; split points with one: {have if have else 'none'}"
                + ("" if have else " (export --bottleneck SPLIT:CHANNELS adds one)")
            )
        return found

    def split_point(self, index: int) -> SplitPoint:
        """The split point at ``index``; :class:`BundleError` listing the valid ones otherwise."""
        for sp in self.split_points:
            if sp.index == index:
                return sp
        raise BundleError(f"unknown split point {index!r}; valid split points: {list(self.split_indices)}")

    def exits_before(self, split: int) -> tuple[Exit, ...]:
        """The exits the edge passes when it runs segments ``[0, split)``."""
        return tuple(e for e in self.exits if e.after_segment < split)

    def exit(self, name: str) -> Exit:
        """The exit called ``name``; :class:`BundleError` listing the valid names otherwise."""
        for e in self.exits:
            if e.name == name:
                return e
        raise BundleError(f"unknown exit {name!r}; valid exits: {[e.name for e in self.exits]}")

    def with_thresholds(
        self, thresholds: Mapping[str, float], calibration: Mapping[str, Mapping[str, Any]]
    ) -> Manifest:
        """A copy with new exit thresholds (and their calibration statistics)."""
        exits = tuple(
            replace(
                e,
                threshold=float(thresholds.get(e.name, e.threshold)),
                calibration=calibration.get(e.name, e.calibration),
            )
            for e in self.exits
        )
        return replace(self, exits=exits)

    def artifact_files(self) -> tuple[str, ...]:
        """Every file the manifest refers to, sorted; the content hash covers exactly these."""
        files = set(self.edge_files())  # with the preprocessing graph (protos.preprocessing)
        files |= {f for sp in self.split_points for f in sp.tails.values()}
        if self.preprocessing.get("kind") == "text":  # the tokenizer is data the edge reads (protos.texttok)
            files.add(str(self.preprocessing["tokenizer"]))
        files |= {f for sp in self.split_points if sp.bottleneck is not None for f in sp.bottleneck.files.values()}
        if self.ort_format:
            files |= set(self.ort_format["files"].values()) | {self.ort_format["operators"]}
        return tuple(sorted(files))

    def to_json(self) -> str:
        """The manifest as pretty JSON."""
        data = asdict(self)
        if not self.ort_format:
            del data["ort_format"]
        for sp in data["split_points"]:
            bn = sp["bottleneck"]
            if bn is None:
                del sp["bottleneck"]  # bundles without bottlenecks are written as before
            else:
                del bn["tails" if bn["decoders"] else "decoders"]
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build and validate a manifest from parsed JSON; :class:`BundleError` names what is wrong."""
        try:
            return cls(
                model=data["model"],
                family=data["family"],
                classes=tuple(data["classes"]),
                input=_tensor(data["input"]),
                output=_tensor(data["output"]),
                segments=tuple(
                    Segment(s["index"], s["file"], _tensor(s["input"]), _tensor(s["output"])) for s in data["segments"]
                ),
                exits=tuple(Exit(**e) for e in data["exits"]),
                split_points=tuple(
                    SplitPoint(
                        sp["index"],
                        sp["name"],
                        _tensor(sp["tensor"]),
                        sp["codec"],
                        dict(sp["tails"]),
                        sp.get("cost"),
                        tuple(sp.get("images", ())),
                        Bottleneck.from_dict(sp["bottleneck"]) if sp.get("bottleneck") else None,
                    )
                    for sp in data["split_points"]
                ),
                default_split=data["default_split"],
                preprocessing=data.get("preprocessing", {}),
                content_hash=data.get("content_hash", ""),
                format_version=data.get("format_version", -1),
                profile=data.get("profile", {}),
                edge_precision=data.get("edge_precision", "fp32"),
                ort_format=data.get("ort_format", {}),
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"malformed manifest: {type(exc).__name__}: {exc}") from exc


def _tensor(data: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        data["name"], tuple(data["shape"]), data.get("datatype", "FP32"), data.get("scale"), data.get("zero_point")
    )


def content_hash(root: Path, files: Iterable[str]) -> str:
    """``sha256:<hex>`` over the files' relative paths and contents, in sorted order."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0")
        with open(root / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its validated manifest."""

    root: Path
    manifest: Manifest

    @classmethod
    def load(cls, root: str | Path, *, verify: bool = True) -> Bundle:
        """Read ``root/manifest.json``; with ``verify`` also check every file and the content hash."""
        root = Path(root)
        path = root / MANIFEST
        _require(path.is_file(), f"no bundle at {root}: {MANIFEST} not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: not valid JSON: {exc}") from exc
        bundle = cls(root, Manifest.from_dict(data))
        if verify:
            bundle.verify()
        return bundle

    def edge_file(self, rel: str) -> Path:
        """The absolute path of what the edge loads for the ONNX file ``rel`` (:meth:`Manifest.edge_file`)."""
        return self.file(self.manifest.edge_file(rel))

    def file(self, rel: str) -> Path:
        """The absolute path of an artifact, refusing paths that leave the bundle."""
        path = (self.root / rel).resolve()
        _require(path.is_relative_to(self.root.resolve()), f"artifact path {rel!r} leaves the bundle")
        return path

    def verify(self) -> None:
        """Raise :class:`BundleError` if a file is missing or the content hash does not match."""
        files = self.manifest.artifact_files()
        missing = [f for f in files if not self.file(f).is_file()]
        _require(not missing, f"bundle {self.root}: missing files {missing}")
        actual = content_hash(self.root, files)
        _require(
            actual == self.manifest.content_hash,
            f"bundle {self.root}: content hash {actual} does not match the manifest's {self.manifest.content_hash}",
        )


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Stamp the content hash of ``root``'s artifacts into ``manifest`` and write it; returns the stamped copy."""
    stamped = replace(manifest, content_hash=content_hash(root, manifest.artifact_files()))
    (root / MANIFEST).write_text(stamped.to_json())
    return stamped
