"""``split.chain``: segment graphs chained into one (the fused tail) compute what the segments compute one after
another, with each weight once and the first input's and last output's names, types and dynamic batch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from split.chain import chain

RNG = np.random.default_rng(0)
CHANNELS = 4


def _segment(name_in: str, name_out: str, op: str = "Relu") -> onnx.ModelProto:
    """``name_in`` [batch, C, 6, 6] -> Conv 3x3 -> ``op`` -> ``name_out``, with the same internal names in every
    segment (``weight``, ``conv``), like graphs exported one by one."""
    weight = numpy_helper.from_array(RNG.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype(np.float32), "weight")
    nodes = [
        helper.make_node("Conv", [name_in, "weight"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node(op, ["conv"], [name_out], name="act"),
    ]
    shape = ["batch", CHANNELS, 6, 6]
    graph = helper.make_graph(
        nodes,
        "segment",
        [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, shape)],
        [weight],
        value_info=[helper.make_tensor_value_info("conv", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {model.graph.input[0].name: x})[0]


@pytest.fixture()
def segments() -> list[onnx.ModelProto]:
    return [_segment("b1", "b2"), _segment("b2", "b3", "Sigmoid"), _segment("b3", "logits", "Tanh")]


def test_the_chain_computes_the_segments_one_after_another(segments: list[onnx.ModelProto]) -> None:
    x = RNG.standard_normal((3, CHANNELS, 6, 6)).astype(np.float32)
    expected = x
    for segment in segments:
        expected = _run(segment, expected)
    out = _run(chain(segments), x)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_the_chain_keeps_the_ends_and_each_weight_once(segments: list[onnx.ModelProto]) -> None:
    model = chain(segments, name="tail1")
    graph = model.graph
    assert graph.name == "tail1"
    assert graph.input[0] == segments[0].graph.input[0] and graph.output[0] == segments[-1].graph.output[0]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    names = [t.name for t in graph.initializer]
    assert len(names) == len(set(names)) == len(segments)
    assert {"b2", "b3"} <= {v.name for v in graph.value_info}
    onnx.checker.check_model(model, full_check=True)


def test_a_single_segment_chains_to_itself(segments: list[onnx.ModelProto]) -> None:
    x = RNG.standard_normal((1, CHANNELS, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run(chain(segments[-1:]), x), _run(segments[-1], x))


def test_graphs_that_do_not_join_are_refused(segments: list[onnx.ModelProto]) -> None:
    with pytest.raises(ValueError, match="outputs 'b2' but graph 1 reads 'b3'"):
        chain([segments[0], segments[2]])
    with pytest.raises(ValueError, match="at least one"):
        chain([])
    other = _segment("b2", "b3")
    other.opset_import[0].version = 17
    with pytest.raises(ValueError, match="different opsets"):
        chain([segments[0], other])
