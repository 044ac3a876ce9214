"""Every codec over a real gRPC server: the exported tail variants decode the wire the way the numpy reference does,
and the bytes shrink as promised."""

from __future__ import annotations

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from edge.client import CloudClient
from edge.errors import CloudRejected
from edge.runtime import EdgeRuntime
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.bundle import Bundle
from protos.codecs import CODECS, Codec, decode, encode
from protos.tensors import add_input, set_param


@pytest.fixture(scope="module")
def boundary_tensors(bundle: Bundle, digits) -> dict[int, np.ndarray]:  # type: ignore[no-untyped-def]
    """The float32 tensor at every offloading split point, for four test samples (one at a time on the wire)."""
    x = digits.x_test[:4]
    out = {0: x}
    for seg in bundle.manifest.segments[:-1]:
        session = ort.InferenceSession(str(bundle.file(seg.file)), providers=["CPUExecutionProvider"])
        x = session.run(None, {seg.input.name: x})[0]
        out[seg.index + 1] = x
    return out


@pytest.fixture()
def client(cloud: str, bundle: Bundle) -> CloudClient:
    c = CloudClient(cloud, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    c.wait_ready()
    yield c  # type: ignore[misc]
    c.close()


@pytest.mark.parametrize("codec", CODECS)
def test_every_tail_variant_computes_the_fp32_tail_of_the_decoded_tensor(
    client: CloudClient, bundle: Bundle, boundary_tensors: dict[int, np.ndarray], codec: str
) -> None:
    c = Codec.parse(codec)
    for sp in bundle.manifest.split_points[:-1]:
        fp32_tail = ort.InferenceSession(str(bundle.file(sp.tail)), providers=["CPUExecutionProvider"])
        for i in range(len(boundary_tensors[sp.index])):
            x = boundary_tensors[sp.index][i : i + 1]
            logits, sent, _, _ = client.infer(sp.index, sp.tensor.name, x, codec=c)
            reference = decode(c.format, sp.tensor.name, encode(c, sp.tensor.name, x))
            expected = fp32_tail.run(None, {sp.tensor.name: reference})[0]
            # Same float32 input to the same graph, up to the order ONNX Runtime sums in: 1e-5 relative.
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
            if c.compressor is None:
                assert sent == sum(t.nbytes for t in encode(c, sp.tensor.name, x).values())


def test_int8_sends_at_most_26_percent_of_fp32_bytes_at_every_split(
    client: CloudClient, bundle: Bundle, boundary_tensors: dict[int, np.ndarray]
) -> None:
    for sp in bundle.manifest.split_points[1:-1]:
        x = boundary_tensors[sp.index][:1]
        fp32 = client.infer(sp.index, sp.tensor.name, x).bytes_sent
        int8 = client.infer(sp.index, sp.tensor.name, x, codec=Codec("int8")).bytes_sent
        assert int8 <= 0.26 * fp32


def test_edge_runtime_with_a_codec_reports_the_wire_bytes(bundle: Bundle, client: CloudClient, digits) -> None:  # type: ignore[no-untyped-def]
    split = 2
    plain = EdgeRuntime(bundle, split=split, cloud=client, exits=False)
    packed = EdgeRuntime(bundle, split=split, cloud=client, exits=False, codec="int8+zstd")
    for x in digits.x_test[:10]:
        a, b = plain.infer(x), packed.infer(x)
        assert a.source == b.source == "cloud"
        assert b.bytes_sent < a.bytes_sent / 3


def test_a_codec_the_split_point_lacks_is_refused_and_the_server_keeps_serving(
    cloud: str, bundle: Bundle, boundary_tensors: dict[int, np.ndarray]
) -> None:
    sp = bundle.manifest.split_point(1)
    x = boundary_tensors[1][:1]
    with grpc.insecure_channel(cloud) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)

        def request(codec: str, tensors: dict[str, np.ndarray]) -> pb.ModelInferRequest:
            r = pb.ModelInferRequest(model_name=bundle.manifest.model)
            set_param(r.parameters, params.SPLIT_POINT, 1)
            set_param(r.parameters, params.CODEC, codec)
            for name, array in tensors.items():
                add_input(r, name, array)
            return r

        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request("int4", {sp.tensor.name: x}), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "valid: ['fp32', 'fp16', 'int8', 'int8c']" in (info.value.details() or "")

        wire = encode(Codec("int8"), sp.tensor.name, x)
        del wire[f"{sp.tensor.name}_zero_point"]
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request("int8", wire), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "_zero_point" in (info.value.details() or "")

        wire = encode(Codec("int8c"), sp.tensor.name, x)
        wire[f"{sp.tensor.name}_scale"] = wire[f"{sp.tensor.name}_scale"][:1]
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request("int8c", wire), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        ok = stub.ModelInfer(request("int8", encode(Codec("int8"), sp.tensor.name, x)), timeout=10)
        assert ok.outputs[0].shape == [1, len(bundle.manifest.classes)]


def test_unknown_codec_on_the_edge_names_the_valid_ones(bundle: Bundle, client: CloudClient) -> None:
    with pytest.raises(ValueError, match="valid codecs"):
        EdgeRuntime(bundle, split=1, cloud=client, codec="int3")
    with pytest.raises(CloudRejected):
        client.infer(1, "not_the_input", np.zeros((1, 2), np.float32))
