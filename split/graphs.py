"""ONNX graph surgery on exported and quantized graphs: strip what the exporter leaves behind, and turn a QDQ
graph's float32 boundary (its input or output) into the uint8 tensor it is quantized to anyway.

An int8 edge chains its graphs on uint8 tensors: segment ``k`` ends ``... -> QuantizeLinear -> DequantizeLinear``
and segment ``k + 1`` (and an exit reading the same tensor) starts ``QuantizeLinear -> DequantizeLinear -> ...``.
Cutting the trailing ``DequantizeLinear`` and the leading ``QuantizeLinear`` (both with the same scale and zero
point) leaves the same computation without a dequantize/quantize pair at each boundary.

A graph of :data:`ORDER_PRESERVING` ops only (a lone max-pool between two segments) passes the uint8 through
(:func:`uint8_passthrough`): it runs float32 on the integers, which ONNX Runtime does faster than its uint8
max-pool, and its output has the input's scale and zero point.

Example:
    >>> scale, zero_point = uint8_output(Path("seg0.onnx"), calibration=b1)              # doctest: +SKIP
    >>> uint8_input(Path("seg1.onnx"), scale, zero_point)                                 # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ORDER_PRESERVING",
    "affine_uint8",
    "compact",
    "order_preserving",
    "strip_metadata",
    "uint8_input",
    "uint8_output",
    "uint8_passthrough",
]

ORDER_PRESERVING = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"})
"""Ops that commute with any increasing map: run on a quantized tensor's integers, they give the quantized result
(the same scale and zero point), exactly."""


def strip_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop doc strings and metadata (the torch exporter's stack traces, module paths and FX nodes, which name
    the build machine's paths): they cost bytes on the device and make the files depend on where they were
    built. The computation is untouched."""
    model.doc_string = ""
    del model.metadata_props[:]
    graph = model.graph
    graph.doc_string = ""
    del graph.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for values in (graph.input, graph.output, graph.value_info):
        for value in values:
            value.doc_string = ""
            del value.metadata_props[:]
    for tensor in graph.initializer:
        tensor.doc_string = ""
        del tensor.metadata_props[:]
    return model


def compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same computation in fewer bytes: :func:`strip_metadata`, no node names, internal tensors renamed to
    short ids (the graph's inputs and outputs keep theirs), and no all-zero zero points on constant int8 and
    int32 tensors (``DequantizeLinear``'s default). A quantized graph spends more on names than on weights
    otherwise: ``blocks.1.body.0.0.weight_bias_quantized_scale`` and its kin, several per channel group."""
    graph = strip_metadata(model).graph
    _drop_zero_points(graph)
    _prune_initializers(graph)
    _shorten_names(graph)
    return model


def _drop_zero_points(graph: onnx.GraphProto) -> None:
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[2] in constants:
            zero_point = numpy_helper.to_array(constants[node.input[2]])
            if node.input[0] in constants and zero_point.dtype in (np.int8, np.int32) and not zero_point.any():
                del node.input[2]


def _shorten_names(graph: onnx.GraphProto) -> None:
    keep = {v.name for v in (*graph.input, *graph.output)}
    fresh = (name for name in (f"t{i:x}" for i in itertools.count()) if name not in keep)
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in short:
            short[name] = next(fresh)
        return short[name]

    for node in graph.node:
        node.name = ""
        for ios in (node.input, node.output):
            for i, name in enumerate(ios):
                ios[i] = rename(name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for value in graph.value_info:
        value.name = rename(value.name)


def affine_uint8(x: np.ndarray) -> tuple[float, int]:
    """ONNX Runtime's min-max calibration of ``x`` to uint8: the range ``[min(x, 0), max(x, 0)]`` onto
    ``[0, 255]``, zero exact. Returns ``(scale, zero_point)``."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return float(np.float32(scale)), int(np.clip(round(-lo / scale), 0, 255))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for ios in (node.input, node.output):
            for i, name in enumerate(ios):
                if name == old:
                    ios[i] = new


def _add_params(graph: onnx.GraphProto, prefix: str, scale: float, zero_point: int) -> tuple[str, str]:
    names = (f"{prefix}_boundary_scale", f"{prefix}_boundary_zero_point")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), names[0]),
            numpy_helper.from_array(np.array(zero_point, np.uint8), names[1]),
        ]
    )
    return names


def _prune_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _param(graph: onnx.GraphProto, name: str) -> np.ndarray:
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise ValueError(f"{name!r} is not an initializer: the quantizer's parameters are expected to be constants")


def uint8_output(path: Path, calibration: np.ndarray) -> tuple[float, int]:
    """Make the graph at ``path`` output uint8 instead of float32; returns the output's ``(scale, zero_point)``.

    A QDQ graph whose output comes out of a ``DequantizeLinear`` loses that node (the output is its quantized
    input, scale and zero point as calibrated); any other graph gets a ``QuantizeLinear`` at its end, calibrated
    on ``calibration`` (what the output receives) like ONNX Runtime's min-max calibrator.
    """
    model = onnx.load(str(path))
    graph = model.graph
    out = graph.output[0]
    producer = next(node for node in graph.node if out.name in node.output)
    if producer.op_type == "DequantizeLinear" and _param(graph, producer.input[2]).dtype == np.uint8:
        scale, zero_point = float(_param(graph, producer.input[1])), int(_param(graph, producer.input[2]))
        quantized = producer.input[0]
        graph.node.remove(producer)
        _rename(graph, quantized, out.name)
    else:
        scale, zero_point = affine_uint8(calibration)
        _rename(graph, out.name, f"{out.name}_float")
        s, z = _add_params(graph, out.name, scale, zero_point)
        graph.node.append(helper.make_node("QuantizeLinear", [f"{out.name}_float", s, z], [out.name]))
    out.type.tensor_type.elem_type = TensorProto.UINT8
    _prune_initializers(graph)
    _save(model, path)
    return scale, zero_point


def uint8_input(path: Path, scale: float, zero_point: int) -> None:
    """Make the graph at ``path`` take uint8 (``(q - zero_point) * scale``) instead of float32.

    When only ``QuantizeLinear`` nodes read the input (a QDQ graph), they are removed and the
    ``DequantizeLinear`` nodes after them use ``scale`` and ``zero_point``, the producer's; otherwise one
    ``DequantizeLinear`` is put in front of the graph.
    """
    model = onnx.load(str(path))
    graph = model.graph
    inp = graph.input[0]
    readers = [node for node in graph.node if inp.name in node.input]
    after = [[node for node in graph.node if q.output[0] in node.input] for q in readers]
    s, z = _add_params(graph, inp.name, scale, zero_point)
    qdq = all(q.op_type == "QuantizeLinear" and all(n.op_type == "DequantizeLinear" for n in nodes)
              for q, nodes in zip(readers, after, strict=True))  # fmt: skip
    if readers and qdq:
        for quantize, dequantizers in zip(readers, after, strict=True):
            for node in dequantizers:
                node.input[1], node.input[2] = s, z
            graph.node.remove(quantize)
            _rename(graph, quantize.output[0], inp.name)
    else:
        _rename(graph, inp.name, f"{inp.name}_float")
        graph.node.insert(0, helper.make_node("DequantizeLinear", [inp.name, s, z], [f"{inp.name}_float"]))
    inp.type.tensor_type.elem_type = TensorProto.UINT8
    _prune_initializers(graph)
    _save(model, path)


def order_preserving(path: Path) -> bool:
    """Whether the graph at ``path`` has :data:`ORDER_PRESERVING` ops only (and at least one)."""
    nodes = onnx.load(str(path)).graph.node
    return bool(nodes) and all(node.op_type in ORDER_PRESERVING for node in nodes)


def uint8_passthrough(path: Path, scale: float, zero_point: int, *, quantized_output: bool = True) -> None:
    """Make the :func:`order_preserving` graph at ``path`` take uint8 ``(q - zero_point) * scale``: it runs on
    the integers (cast to float32, exact) and outputs uint8 with the same scale and zero point, or, without
    ``quantized_output``, the float32 value (a ``DequantizeLinear`` at its end)."""
    model = onnx.load(str(path))
    graph = model.graph
    inp, out = graph.input[0], graph.output[0]
    _rename(graph, inp.name, f"{inp.name}_float")
    graph.node.insert(0, helper.make_node("Cast", [inp.name], [f"{inp.name}_float"], to=TensorProto.FLOAT))
    inp.type.tensor_type.elem_type = TensorProto.UINT8
    _rename(graph, out.name, f"{out.name}_integers")
    if quantized_output:
        graph.node.append(helper.make_node("Cast", [f"{out.name}_integers"], [out.name], to=TensorProto.UINT8))
        out.type.tensor_type.elem_type = TensorProto.UINT8
    else:
        s, z = _add_params(graph, out.name, scale, zero_point)
        graph.node.extend(
            [
                helper.make_node("Cast", [f"{out.name}_integers"], [f"{out.name}_uint8"], to=TensorProto.UINT8),
                helper.make_node("DequantizeLinear", [f"{out.name}_uint8", s, z], [out.name]),
            ]
        )
    _save(model, path)
