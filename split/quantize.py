"""Static int8 quantization of a bundle's edge half (segments and exits) with ONNX Runtime's tooling.

Each edge graph is rewritten in QDQ form (``QuantizeLinear``/``DequantizeLinear`` pairs around int8 weights and
activations, per-channel weights), calibrated on the tensors that reach it when the float32 segments run on the
calibration split. The graphs keep float32 inputs and outputs, so the edge runtime loads them unchanged; the cloud
tails stay float32.

Example:
    >>> quantize_edge(Path("bundle/"), manifest, data.x_cal)                    # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from protos.bundle import Manifest

__all__ = ["EDGE_PRECISIONS", "edge_outputs", "quantize_edge", "quantize_graph"]

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


def quantize_graph(path: Path, calibration: np.ndarray, out: Path | None = None) -> None:
    """Quantize the ONNX graph at ``path`` (into ``out``, default in place), calibrated on ``calibration``,
    a batch of the tensors its single input receives."""
    name = _session(path).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(path), str(pre))  # shape inference and folding, as the tooling recommends
        except Exception:  # a graph the pre-processor cannot handle is quantized as it is
            pre = path
        quantize_static(
            str(pre),
            str(out or path),
            _Batches(name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
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


def quantize_edge(root: Path, manifest: Manifest, calibration: np.ndarray) -> None:
    """Quantize every segment and exit of the bundle at ``root`` in place (its manifest is left to the caller),
    calibrated on ``calibration`` (inputs of the model, e.g. the calibration split)."""
    bounds, _ = edge_outputs(root, manifest, calibration)  # float32: each graph sees what the float model sends
    for segment in manifest.segments:
        quantize_graph(root / segment.file, bounds[segment.index])
    for spec in manifest.exits:
        quantize_graph(root / spec.file, bounds[spec.after_segment + 1])
