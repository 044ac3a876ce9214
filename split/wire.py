"""Tail variants per wire format: the float32 tail with its input replaced by what the wire carries.

``fp16`` puts a Cast in front; ``int8`` and ``int8c`` a DequantizeLinear whose scale and zero point are inputs
of the graph (per tensor: ``[1]``, reshaped to a scalar; per channel: ``[C]`` on axis 1). The rest of the
graph is untouched, so every variant computes the float32 tail on the dequantized tensor.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from protos.codecs import wire_inputs

__all__ = ["write_tail_variant"]


def _retarget(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node that reads ``old`` reads ``new`` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def write_tail_variant(fp32_tail: Path, fmt: str, out: Path) -> None:
    """Write the tail for wire format ``fmt`` (``fp16``, ``int8``, ``int8c``) derived from ``fp32_tail``."""
    model = onnx.load(str(fp32_tail))
    graph = model.graph
    (source,) = graph.input
    name = source.name
    dims = [d.dim_param or d.dim_value for d in source.type.tensor_type.shape.dim]
    channels = dims[1]
    decoded = f"{name}__float"
    _retarget(graph, name, decoded)
    graph.ClearField("input")
    if fmt == "fp16":
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT16, dims))
        front = [helper.make_node("Cast", [name], [decoded], to=TensorProto.FLOAT, name="wire_cast")]
    elif fmt in ("int8", "int8c"):
        x, scale, zero_point = wire_inputs(fmt, name)
        width = channels if fmt == "int8c" else 1
        graph.input.extend(
            [
                helper.make_tensor_value_info(x, TensorProto.INT8, dims),
                helper.make_tensor_value_info(scale, TensorProto.FLOAT, [width]),
                helper.make_tensor_value_info(zero_point, TensorProto.INT8, [width]),
            ]
        )
        if fmt == "int8c":
            front = [helper.make_node("DequantizeLinear", [x, scale, zero_point], [decoded], axis=1, name="wire_dq")]
        else:
            scalar = helper.make_tensor(f"{name}__scalar_shape", TensorProto.INT64, [0], [])
            graph.initializer.append(scalar)
            front = [
                helper.make_node("Reshape", [scale, scalar.name], [f"{scale}__scalar"], name="wire_scale"),
                helper.make_node("Reshape", [zero_point, scalar.name], [f"{zero_point}__scalar"], name="wire_zp"),
                helper.make_node(
                    "DequantizeLinear", [x, f"{scale}__scalar", f"{zero_point}__scalar"], [decoded], name="wire_dq"
                ),
            ]
    else:
        raise ValueError(f"no tail variant for wire format {fmt!r}; variants: fp16, int8, int8c")
    nodes = [*front, *graph.node]
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
