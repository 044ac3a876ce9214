"""An int8 edge: QDQ segments and exits calibrated on the calibration split, chained on uint8, fp32 tails,
recalibrated thresholds, and an edge runtime whose int8 wire carries the head's own uint8 tensor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.batch import infer_batch
from edge.client import CloudClient
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from protos.codecs import Codec, decode, dequantize, encode
from split.pipeline import BundleConfig, make_bundle
from split.quantize import edge_outputs
from split.train import TrainConfig


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def int8(trained, digits, tmp_path_factory):  # type: ignore[no-untyped-def]
    _, _, model = trained
    out = tmp_path_factory.mktemp("int8")
    bundle, net = make_bundle(
        digits,
        model,
        TrainConfig(epochs=4),
        BundleConfig(default_split=2, edge_precision="int8"),
        cache=tmp_path_factory.mktemp("cache-int8"),
        out=out,
        progress=False,
    )
    return bundle, net


def test_edge_graphs_are_int8_and_tails_fp32(int8) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    loaded = Bundle.load(bundle.root)  # the content hash covers the quantized files
    m = loaded.manifest
    assert m.edge_precision == "int8"
    for rel in [s.file for s in m.segments] + [e.file for e in m.exits]:
        assert "DequantizeLinear" in _ops(loaded.file(rel)), rel
        weights = onnx.load(str(loaded.file(rel))).graph.initializer
        assert any(w.data_type == onnx.TensorProto.INT8 for w in weights), rel
    for sp in m.split_points:  # the int8 wire formats' tails dequantize their input; their weights stay fp32
        for rel in sp.tails.values():
            assert not any(
                w.data_type == onnx.TensorProto.INT8 for w in onnx.load(str(loaded.file(rel))).graph.initializer
            ), rel


def test_thresholds_are_calibrated_on_the_int8_exits(int8, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    m = bundle.manifest
    _, logits = edge_outputs(bundle.root, m, digits.x_cal)
    first = m.exits[0]
    stats = dict(first.calibration)
    probs = np.exp(logits[first.name] - logits[first.name].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    exited = int((probs.max(-1) >= first.threshold).sum())
    assert stats["exited"] == exited  # the count the int8 exit really takes at its threshold


def test_int8_edge_answers_like_the_fp32_model(int8, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, net = int8
    n = len(bundle.manifest.segments)
    runtime = EdgeRuntime(bundle, split=n, exits=False)  # the whole model on the (int8) edge
    labels = np.array([runtime.infer(digits.x_test[i : i + 1]).label for i in range(len(digits.x_test))])
    import torch

    with torch.no_grad():
        reference = net(torch.from_numpy(digits.x_test)).argmax(-1).numpy()
    agreement = (labels == reference).mean()
    assert agreement > 0.95, agreement
    assert (labels == digits.y_test).mean() > (reference == digits.y_test).mean() - 0.03


def _graph_io(path: Path) -> tuple[int, int]:
    graph = onnx.load(str(path)).graph
    return graph.input[0].type.tensor_type.elem_type, graph.output[0].type.tensor_type.elem_type


def test_graphs_hand_each_other_uint8_and_the_manifest_says_how(int8) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    m = bundle.manifest
    n, u8, f32 = len(m.segments), onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
    for s in m.segments:
        inner_in, inner_out = s.index > 0, s.index < n - 1
        assert s.input.quantized == inner_in and s.output.quantized == inner_out, s
        assert _graph_io(bundle.file(s.file)) == (u8 if inner_in else f32, u8 if inner_out else f32)
        if inner_in:  # the leading QuantizeLinear is gone: the graph reads the uint8 as it comes
            graph = onnx.load(str(bundle.file(s.file))).graph
            readers = [node.op_type for node in graph.node if s.input.name in node.input]
            assert readers and "QuantizeLinear" not in readers, readers
    for e in m.exits:
        assert _graph_io(bundle.file(e.file)) == (u8, f32)  # uint8 feature map in, float32 logits out
    for sp in m.split_points:
        assert sp.tensor.datatype == "FP32" and not sp.tensor.quantized  # what the fp32 tail takes
    stem = onnx.load(str(bundle.file(m.segments[0].file))).graph
    assert any(node.op_type == "Conv" and m.input.name in node.input for node in stem.node)  # the stem stays float


def test_edge_graphs_carry_no_exporter_metadata(int8, bundle) -> None:  # type: ignore[no-untyped-def]
    for b in (int8[0], bundle):
        m = b.manifest
        for rel in [s.file for s in m.segments] + [e.file for e in m.exits]:
            blob = b.file(rel).read_bytes()
            assert b"pkg.torch" not in blob and b"site-packages" not in blob and b"_quantized_scale" not in blob, rel


@pytest.fixture()
def int8_cloud(int8) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from cloud.server import CloudConfig, CloudServer

    server = CloudServer(CloudConfig(bundles=(str(int8[0].root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield target
    server.stop(grace=1.0)


def test_the_int8_wire_carries_the_head_s_own_tensor(int8, int8_cloud, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    m = bundle.manifest
    split = m.default_split
    boundary = m.segments[split].input
    x = digits.x_test[:8]
    for s in m.segments[:split]:
        x = ort.InferenceSession(str(bundle.file(s.file)), providers=["CPUExecutionProvider"]).run(
            None, {s.input.name: x}
        )[0]
    assert x.dtype == np.uint8
    name = m.split_point(split).tensor.name
    wire = encode(Codec("int8"), name, x, boundary)
    # the tail gets exactly what the head computed; quantizing its float32 value afresh would not
    assert np.array_equal(decode("int8", name, wire), dequantize(x, boundary))
    fresh = encode(Codec("int8"), name, dequantize(x, boundary))
    assert not np.array_equal(decode("int8", name, fresh), dequantize(x, boundary))

    tail_file = bundle.file(m.split_point(split).tails["fp32"])
    tail = ort.InferenceSession(str(tail_file), providers=["CPUExecutionProvider"])
    expected = tail.run(None, {name: dequantize(x, boundary)})[0]
    client = CloudClient(int8_cloud, model=m.model, bundle_hash=m.content_hash)
    client.wait_ready()
    runtime = EdgeRuntime(bundle, cloud=client, split=split, exits=False, codec="int8")
    try:
        for i in range(len(x)):
            answer = runtime.infer(digits.x_test[i : i + 1])
            assert answer.source == "cloud" and answer.codec == "int8"
            assert answer.bytes_sent == int(np.prod(x.shape[1:])) + 4 + 1  # uint8 values, one scale, one zero point
            np.testing.assert_allclose(answer.probabilities, _softmax(expected[i]), rtol=1e-5, atol=1e-6)
        # the boundary's scale is fixed, not the batch's: a batch travels in one int8 request, answers unchanged
        answers = infer_batch(runtime, digits.x_test[: len(x)])
        assert runtime.stats()["offloads"] == len(x) + 1
        for i, answer in enumerate(answers):
            np.testing.assert_allclose(answer.probabilities, _softmax(expected[i]), rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()
