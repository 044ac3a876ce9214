"""A Triton model repository from a bundle: one model per fused tail (split point × wire format), for scale-out.

Each tail becomes ``<repo>/<model>_s<split>_<format>/`` with ``config.pbtxt`` (platform ``onnxruntime_onnx``)
and ``1/model.onnx`` (a copy of the bundle's tail). Tails whose inputs all have the batch dimension get
``max_batch_size`` and the dynamic batcher, so Triton merges requests from many edges into one run. The int8
tails also take a scale and a zero point that have no batch dimension: they hold one value per request (or per
channel), so requests must not be merged; those models get ``max_batch_size: 0`` (whole shapes, ``-1`` for the
batch), and their ``config.pbtxt`` says why.

Split point 0's image codecs (``jpeg<Q>``, ``png``: :mod:`protos.codecs`) have no model here: decoding an image
needs Triton's Python backend or DALI, which this export does not write. An edge that offloads to Triton uses a
tensor codec at split point 0 (the preprocessed ``input``); ``edgesplit cloud`` serves both.

A learned bottleneck's tails become ``<model>_s<split>_bn_<format>``: the bundle holds only its decoders, so
each of these models is fused here, decoder + the split point's fp32 tail, then given the wire format's front
(:mod:`split.wire`) — one model Triton runs, as ``edgesplit cloud`` runs the two sessions one after the other.

Torch-free, and onnx-free for bundles without bottlenecks: the tails' inputs follow from the manifest and the wire
formats, so such a bundle converts wherever edgesplit's runtime is installed; fusing a bottleneck needs onnx.

Example:
    >>> models = write_repository(Bundle.load("bundle/"), Path("triton-repo"))   # doctest: +SKIP
    >>> [m.name for m in models][:2]                                            # doctest: +SKIP
    ['mobilenetv2_digits_s0_fp32', 'mobilenetv2_digits_s0_fp16']
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from protos import params
from protos.bundle import WIRE_FORMATS, Bundle, SplitPoint, TensorSpec
from protos.codecs import wire_inputs

__all__ = [
    "TRITON_TYPES",
    "TritonConfig",
    "TritonModel",
    "render_config",
    "tail_inputs",
    "tail_models",
    "write_repository",
]

TRITON_TYPES = {
    "FP32": "TYPE_FP32",
    "FP16": "TYPE_FP16",
    "INT8": "TYPE_INT8",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
}
"""KServe datatype -> Triton ``data_type`` for every datatype a bundle's tensors have."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonConfig:
    """How the repository's models batch: the largest batch and the dynamic batcher's queue delay."""

    max_batch_size: int = 32
    max_queue_delay_us: int = 500
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")

    @property
    def preferred_batch_sizes(self) -> tuple[int, ...]:
        """The largest batch, its half and its quarter (those that are >= 1)."""
        return tuple(sorted({max(1, self.max_batch_size // d) for d in (4, 2, 1)}))


@dataclass(frozen=True)
class TritonModel:
    """One tail as a Triton model: its name, where it comes from and its tensors (``-1``: the batch)."""

    name: str
    split: int
    format: str
    source: str
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    bottleneck: bool = False
    decoder: str = ""
    """A bottleneck's fp32 decoder, fused in front of ``source`` (the fp32 tail) when written; empty: none."""

    @property
    def unbatched(self) -> tuple[str, ...]:
        """The inputs without a batch dimension (they make the model ``max_batch_size: 0``)."""
        return tuple(s.name for s in self.inputs if not s.shape or s.shape[0] != -1)


def tail_inputs(fmt: str, tensor: TensorSpec) -> tuple[TensorSpec, ...]:
    """The inputs of the tail for wire format ``fmt`` at a split point whose float32 tensor is ``tensor``.

    See :mod:`protos.codecs`: fp32 and fp16 send the tensor; int8 and int8c send it as INT8 with a scale (FP32)
    and a zero point (INT8) of one value (int8) or one per channel (int8c, axis 1).
    """
    if fmt not in WIRE_FORMATS:
        raise ValueError(f"unknown wire format {fmt!r}; valid: {list(WIRE_FORMATS)}")
    if fmt == "fp32":
        return (tensor,)
    if fmt == "fp16":
        return (TensorSpec(tensor.name, tensor.shape, "FP16"),)
    x, scale, zero_point = wire_inputs(fmt, tensor.name)
    width = tensor.shape[1] if fmt == "int8c" else 1
    return (TensorSpec(x, tensor.shape, "INT8"), TensorSpec(scale, (width,)), TensorSpec(zero_point, (width,), "INT8"))


def _model_name(prefix: str, sp: SplitPoint, fmt: str, bottleneck: bool = False) -> str:
    name = f"{prefix}_s{sp.index}_bn_{fmt}" if bottleneck else f"{prefix}_s{sp.index}_{fmt}"
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"Triton model name {name!r} is not safe as a directory name: use letters, digits, '_', '-' and '.'"
            " (not first); choose another prefix with --model-name"
        )
    return name


def _bottleneck_models(prefix: str, sp: SplitPoint, output: TensorSpec) -> list[TritonModel]:
    """The models of ``sp``'s bottleneck tails (none without a bottleneck)."""
    bn = sp.bottleneck
    if bn is None or sp.tail is None:
        return []
    return [
        TritonModel(
            _model_name(prefix, sp, fmt, True),
            sp.index,
            fmt,
            bn.tails[fmt] if bn.fused else sp.tail,  # the first bottleneck bundles held fused tails
            tail_inputs(fmt, bn.code),
            output,
            bottleneck=True,
            decoder="" if bn.fused else bn.decoders["fp32"],
        )
        for fmt in WIRE_FORMATS
        if fmt in bn.files
    ]


def _write_fused(bundle: Bundle, model: TritonModel, out: Path) -> None:
    """``model``'s decoder chained with its fp32 tail, in ``model.format``'s variant, written to ``out``."""
    import onnx  # a bottleneck's fusion only: plain bundles convert without onnx

    from split.chain import chain
    from split.wire import write_tail_variant

    parts = [onnx.load(str(bundle.file(rel))) for rel in (model.decoder, model.source)]
    onnx.save(chain(parts, name=model.name), str(out))
    if model.format != "fp32":
        write_tail_variant(out, model.format, out)


def tail_models(bundle: Bundle, prefix: str | None = None) -> list[TritonModel]:
    """The Triton models for every fused tail of ``bundle``, named ``<prefix>_s<split>_<format>``, and for every
    bottleneck tail (decoder + tail, taking the code), ``<prefix>_s<split>_bn_<format>``."""
    manifest = bundle.manifest
    prefix = manifest.model if prefix is None else prefix
    found = []
    for sp in manifest.split_points:
        for fmt in (f for f in WIRE_FORMATS if f in sp.tails):
            name = _model_name(prefix, sp, fmt)
            found.append(TritonModel(name, sp.index, fmt, sp.tails[fmt], tail_inputs(fmt, sp.tensor), manifest.output))
        found += _bottleneck_models(prefix, sp, manifest.output)
    return found


def _tensor_block(spec: TensorSpec, batched: bool) -> str:
    dims = spec.shape[1:] if batched else spec.shape
    return (
        f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_TYPES[spec.datatype]}\n'
        f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
    )


def _parameters(model: TritonModel, bundle_hash: str) -> str:
    values = {params.SPLIT_POINT: str(model.split), params.CODEC: model.format}
    if model.bottleneck:
        values[params.BOTTLENECK] = "true"
    if bundle_hash:
        values[params.BUNDLE_HASH] = bundle_hash
    blocks = [f'  {{\n    key: "{k}"\n    value: {{ string_value: "{v}" }}\n  }}' for k, v in values.items()]
    return "parameters [\n" + ",\n".join(blocks) + "\n]"


def render_config(model: TritonModel, config: TritonConfig, origin: str = "", bundle_hash: str = "") -> str:
    """The ``config.pbtxt`` text of ``model`` (protobuf text format of Triton's ``ModelConfig``).

    Its ``parameters`` name the split point and wire format, and the bundle's content hash when given: an edge
    reads them (``ModelConfig``) before it offloads, and refuses a repository exported from another bundle.
    """
    batched = not model.unbatched
    lines = [f"# Written by `edgesplit export --format triton`{origin}: split point {model.split}, {model.format}."]
    lines += [f'name: "{model.name}"', 'platform: "onnxruntime_onnx"']
    if batched:
        lines.append(f"max_batch_size: {config.max_batch_size}")
    else:
        lines.append(
            f"# max_batch_size 0: {', '.join(model.unbatched)} have no batch dimension (one value per request),"
            " so requests must not be batched together; dims are whole shapes, -1 is the batch."
        )
        lines.append("max_batch_size: 0")
    lines.append("input [\n" + ",\n".join(_tensor_block(s, batched) for s in model.inputs) + "\n]")
    lines.append("output [\n" + _tensor_block(model.output, batched) + "\n]")
    if batched:
        sizes = ", ".join(str(n) for n in config.preferred_batch_sizes)
        lines.append(
            f"dynamic_batching {{\n  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {config.max_queue_delay_us}\n}}"
        )
    lines.append(f"instance_group [\n  {{\n    kind: KIND_CPU\n    count: {config.instances}\n  }}\n]")
    lines.append(_parameters(model, bundle_hash))
    return "\n".join(lines) + "\n"


def write_repository(
    bundle: Bundle, repo: Path, config: TritonConfig | None = None, prefix: str | None = None
) -> list[TritonModel]:
    """Write a model directory per tail of ``bundle`` under ``repo`` (replacing those directories only).

    Other models already in ``repo`` are left alone, so several bundles can share one repository.
    """
    config = config or TritonConfig()
    written = tail_models(bundle, prefix)
    origin = f" from bundle {bundle.manifest.model} ({bundle.manifest.content_hash})"
    for model in written:
        target = repo / model.name
        if target.exists():
            shutil.rmtree(target)
        (target / "1").mkdir(parents=True)
        if model.decoder:
            _write_fused(bundle, model, target / "1" / "model.onnx")
        else:
            shutil.copyfile(bundle.file(model.source), target / "1" / "model.onnx")
        (target / "config.pbtxt").write_text(render_config(model, config, origin, bundle.manifest.content_hash))
    return written
