"""Static int8 quantization of a bundle's edge half (segments and exits) with ONNX Runtime's tooling.

Each edge graph is rewritten in QDQ form (``QuantizeLinear``/``DequantizeLinear`` pairs around int8 weights and
uint8 activations, per-channel weights), calibrated on the tensors that reach it when the float32 segments run on
the calibration split. The graphs then hand each other the uint8 tensors themselves (:mod:`split.graphs`): a
segment's output is not dequantized at its end to be quantized again at the start of the next segment and of the
exit that reads it, and the split tensor leaves the edge in the ``int8`` wire format without a round trip through
float32 (:func:`protos.codecs.encode`). The model's input and the logits stay float32; so do the cloud tails.
Unsigned activations: on x86 ONNX Runtime's u8s8 kernels are the fast ones (VNNI); s8s8 ran at half their speed
here.

Example:
    >>> manifest = quantize_edge(Path("bundle/"), manifest, data.x_cal)         # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from protos.bundle import Manifest, TensorSpec
from split.graphs import compact, order_preserving, uint8_input, uint8_output, uint8_passthrough

__all__ = ["EDGE_PRECISIONS", "edge_outputs", "has_weights", "quantize_edge", "quantize_graph", "quantized_copy"]

EDGE_PRECISIONS = ("fp32", "int8")


class _Batches(CalibrationDataReader):
    """Feeds ``x`` to the graph's input ``name`` in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 64) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{name: x[i : i + batch]} for i in range(0, len(x), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_graph(
    path: Path,
    calibration: np.ndarray,
    out: Path | None = None,
    *,
    model_input: bool = False,
    op_types: Sequence[str] | None = None,
) -> None:
    """Quantize the ONNX graph at ``path`` (into ``out``, default in place), calibrated on ``calibration``,
    a batch of the tensors its single input receives. With ``model_input`` (the graph reads the model's input),
    the convolutions that read it stay float32: an image has one to three channels, too few for int8 kernels to
    gain (keeping the stem float made the first segment 10-22% faster here), and the first layer is the one
    most sensitive to quantization. ``op_types``: quantize only those ops (default: all the tooling can)."""
    name = _session(path).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(path), str(pre))  # shape inference and folding, as the tooling recommends
        except Exception:  # a graph the pre-processor cannot handle is quantized as it is
            pre = path
        model = onnx.load(str(pre))
        for i, node in enumerate(model.graph.node):  # the quantizer excludes nodes by name; compact() drops them
            node.name = node.name or f"node{i}"
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        stem = [n.name for n in model.graph.node if n.op_type == "Conv" and name in n.input]
        quantize_static(
            str(named),
            str(out or path),
            _Batches(name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=stem if model_input else [],
            op_types_to_quantize=list(op_types) if op_types else None,
            # ops that only move values (MaxPool, Reshape ...) are quantized even at a graph's input, so the
            # input can be handed over as uint8
            extra_options={"ForceQuantizeNoInputCheck": True},
        )


def edge_outputs(root: Path, manifest: Manifest, x: np.ndarray) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Run the bundle's edge graphs on ``x``: the tensor at every boundary (``[0]`` is ``x``) and every exit's
    logits by name."""
    bounds = [x]
    for segment in manifest.segments:
        session = _session(root / segment.file)
        bounds.append(session.run(None, {segment.input.name: bounds[-1]})[0])
    logits = {}
    for spec in manifest.exits:
        session = _session(root / spec.file)
        logits[spec.name] = session.run(None, {session.get_inputs()[0].name: bounds[spec.after_segment + 1]})[0]
    return bounds, logits


_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def has_weights(path: Path) -> bool:
    """Whether the graph at ``path`` has an op that int8 speeds up (a convolution or a matrix product). A graph of
    pooling and reshapes only gains nothing from int8 and lost here: ONNX Runtime's uint8 MaxPool ran 3x slower
    than its float32 one (such a graph passes uint8 through instead, run float32 on the integers)."""
    return any(node.op_type in _WEIGHTED_OPS for node in onnx.load(str(path)).graph.node)


def _chain(
    root: Path, manifest: Manifest, bounds: list[np.ndarray], quantized: set[str], through: set[str]
) -> dict[int, TensorSpec]:
    """Turn every boundary whose producer can emit uint8 and whose readers can take it into uint8; the new specs
    by boundary index (boundary ``k``: the output of segment ``k - 1``, the input of segment ``k``)."""
    boundaries: dict[int, TensorSpec] = {}
    for k in range(1, len(manifest.segments)):
        producer, reader = manifest.segments[k - 1].file, manifest.segments[k].file
        exits = [e.file for e in manifest.exits if e.after_segment + 1 == k]
        if reader not in quantized | through or not all(f in quantized for f in exits):
            continue
        if producer in quantized:
            scale, zero_point = uint8_output(root / producer, bounds[k])
        elif producer in through and k - 1 in boundaries:  # its output is quantized as its input is
            scale, zero_point = boundaries[k - 1].scale, boundaries[k - 1].zero_point  # type: ignore[assignment]
        else:
            continue
        boundaries[k] = replace(manifest.segments[k].input, datatype="UINT8", scale=scale, zero_point=zero_point)
        for f in [reader, *exits]:
            if f in quantized:
                uint8_input(root / f, scale, zero_point)
    for s in manifest.segments:
        if s.file in through and s.index in boundaries:
            b = boundaries[s.index]
            last = s.index + 1 not in boundaries
            uint8_passthrough(root / s.file, b.scale, b.zero_point, quantized_output=not last)  # type: ignore[arg-type]
    return boundaries


def quantize_edge(root: Path, manifest: Manifest, calibration: np.ndarray) -> Manifest:
    """Quantize the segments and exits of the bundle at ``root`` in place (those with weights, see
    :func:`has_weights`), calibrated on ``calibration`` (inputs of the model, e.g. the calibration split), and
    chain them on uint8 where both sides of a boundary can take it (a segment of order-preserving ops only passes
    it through, :func:`split.graphs.uint8_passthrough`). Returns the manifest with ``edge_precision="int8"`` and
    those boundaries ``UINT8`` with their scale and zero point (not written: that is the caller's, once the
    thresholds are recalibrated)."""
    bounds, _ = edge_outputs(root, manifest, calibration)  # float32: each graph sees what the float model sends
    quantized = {f for f in manifest.artifact_files() if f.startswith(("segments/", "exits/"))}
    quantized = {f for f in quantized if has_weights(root / f)}
    through = {s.file for s in manifest.segments if s.file not in quantized and order_preserving(root / s.file)}
    for segment in manifest.segments:
        if segment.file in quantized:
            quantize_graph(root / segment.file, bounds[segment.index], model_input=segment.index == 0)
    for spec in manifest.exits:
        if spec.file in quantized:  # the convolution only: its pooling and 32-wide linear layer ran faster float
            quantize_graph(root / spec.file, bounds[spec.after_segment + 1], op_types=("Conv",))
    boundaries = _chain(root, manifest, bounds, quantized, through)
    for f in quantized | through:
        onnx.save(compact(onnx.load(str(root / f))), str(root / f))
    segments = tuple(
        replace(s, input=boundaries.get(s.index, s.input), output=boundaries.get(s.index + 1, s.output))
        for s in manifest.segments
    )
    return replace(manifest, segments=segments, edge_precision="int8")


def quantized_copy(fp32_root: Path, manifest: Manifest, out: Path, calibration: np.ndarray) -> Manifest:
    """Copy the fp32 bundle at ``fp32_root`` to ``out`` (replacing it) and quantize the copy's edge there
    (:func:`quantize_edge`); the manifest is returned, not written: the caller may recalibrate the exits first."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(fp32_root, out)
    return quantize_edge(out, manifest, calibration)
