"""``split.graphs``: graph surgery that must leave the computation alone — compaction, and chaining quantized graphs
on uint8 (both the QDQ path and the fallback for graphs the quantizer leaves float at a boundary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from split.graphs import affine_uint8, compact, order_preserving, uint8_input, uint8_output, uint8_passthrough
from split.quantize import quantize_graph

RNG = np.random.default_rng(0)


def _conv_graph(path: Path, name_in: str, name_out: str, channels: int, tail: str | None = None) -> Path:
    """``name_in`` [N, C, 6, 6] -> Conv 3x3 -> Relu (-> ``tail``) -> ``name_out``, saved at ``path``."""
    weight = RNG.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.3
    w = numpy_helper.from_array(weight, "a.long.weight")
    b = numpy_helper.from_array(RNG.standard_normal(channels).astype(np.float32) * 0.1, "a.long.bias")
    nodes = [
        helper.make_node("Conv", [name_in, "a.long.weight", "a.long.bias"], ["conv"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["conv"], ["relu" if tail else name_out], name="relu0"),
    ]
    if tail:
        nodes.append(helper.make_node(tail, ["relu"], [name_out], name="tail0"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, ["N", channels, 6, 6])],
        [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, ["N", channels, 6, 6])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.stack_trace", value="/home/someone/model.py")
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture()
def x() -> np.ndarray:
    return RNG.standard_normal((16, 4, 6, 6)).astype(np.float32)


def test_compact_keeps_the_computation_and_sheds_names_and_metadata(tmp_path: Path, x: np.ndarray) -> None:
    path = _conv_graph(tmp_path / "a.onnx", "b1", "b2", 4)
    quantize_graph(path, x)
    before, size = _run(path, x), path.stat().st_size
    onnx.save(compact(onnx.load(str(path))), str(path))
    assert np.array_equal(_run(path, x), before)
    assert path.stat().st_size < size
    blob = path.read_bytes()
    assert b"a.long.weight" not in blob and b"someone" not in blob
    graph = onnx.load(str(path)).graph
    assert [graph.input[0].name, graph.output[0].name] == ["b1", "b2"]  # the boundary names stay


def test_two_qdq_graphs_chain_on_uint8_without_a_requantization(tmp_path: Path, x: np.ndarray) -> None:
    a, b = _conv_graph(tmp_path / "a.onnx", "b1", "b2", 4), _conv_graph(tmp_path / "b.onnx", "b2", "b3", 4)
    quantize_graph(a, x)
    mid = _run(a, x)
    quantize_graph(b, mid)
    float_chain = _run(b, _run(a, x))  # each graph dequantizes at its end and quantizes again at its start
    scale, zero_point = uint8_output(a, mid)
    uint8_input(b, scale, zero_point)
    q = _run(a, x)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal((q.astype(np.float32) - zero_point) * np.float32(scale), mid)
    np.testing.assert_allclose(_run(b, q), float_chain, rtol=1e-6, atol=1e-6)
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(b)).graph.node if "b2" in n.input}


def test_graphs_without_qdq_boundaries_get_an_explicit_quantize_and_dequantize(tmp_path: Path, x: np.ndarray) -> None:
    a = _conv_graph(tmp_path / "a.onnx", "b1", "b2", 4, tail="Sigmoid")  # float graph: no DequantizeLinear at its end
    b = _conv_graph(tmp_path / "b.onnx", "b2", "b3", 4)  # float graph: no QuantizeLinear at its start
    mid, end = _run(a, x), _run(b, _run(a, x))
    scale, zero_point = uint8_output(a, mid)
    assert (scale, zero_point) == affine_uint8(mid) and zero_point == 0  # a sigmoid is never negative
    uint8_input(b, scale, zero_point)
    q = _run(a, x)
    assert q.dtype == np.uint8
    assert np.abs((q.astype(np.float32) - zero_point) * scale - mid).max() <= scale / 2 + 1e-7
    assert np.abs(_run(b, q) - end).max() < 0.05  # one rounding of the boundary, nothing more


def test_affine_uint8_keeps_zero_exact() -> None:
    scale, zero_point = affine_uint8(np.array([-1.0, 0.0, 3.0], np.float32))
    assert zero_point == 64 and scale == pytest.approx(4 / 255)
    assert affine_uint8(np.zeros(3, np.float32)) == (1.0, 0)


def _maxpool_graph(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["b2"], ["b3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        "pool",
        [helper.make_tensor_value_info("b2", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info("b3", TensorProto.FLOAT, ["N", 4, 3, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("quantized_output", [True, False])
def test_an_order_preserving_graph_passes_uint8_through_exactly(tmp_path: Path, quantized_output: bool) -> None:
    pool = _maxpool_graph(tmp_path / "pool.onnx")
    assert order_preserving(pool) and not order_preserving(_conv_graph(tmp_path / "c.onnx", "b1", "b2", 4))
    q = RNG.integers(0, 256, (3, 4, 6, 6)).astype(np.uint8)
    scale, zero_point = 0.03, 17
    real = (q.astype(np.float32) - zero_point) * np.float32(scale)
    expected = _run(pool, real)  # the float graph on the real values
    uint8_passthrough(pool, scale, zero_point, quantized_output=quantized_output)
    out = _run(pool, q)
    if quantized_output:  # the max of the quantized values is the quantized max: same scale and zero point
        assert out.dtype == np.uint8
        np.testing.assert_array_equal((out.astype(np.float32) - zero_point) * np.float32(scale), expected)
    else:
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)
