"""The edge's local KServe v2 endpoint, over real gRPC: apps get the runtime's answers; bad input gets a status."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from edge.client import CloudClient
from edge.metrics import render
from edge.runtime import EdgeRuntime
from edge.server import ANSWERS, EdgeServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.bundle import Bundle
from protos.tensors import add_input, get_param, response_outputs


@pytest.fixture()
def served(bundle: Bundle, cloud: str) -> Iterator[tuple[inference_pb2_grpc.GRPCInferenceServiceStub, EdgeRuntime]]:
    m = bundle.manifest
    client = CloudClient(cloud, model=m.model, bundle_hash=m.content_hash)
    client.wait_ready()
    runtime = EdgeRuntime(bundle, split=1, cloud=client)
    server = EdgeServer(runtime, "127.0.0.1:0")
    port = server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield inference_pb2_grpc.GRPCInferenceServiceStub(channel), runtime
    server.stop(grace=1.0)
    client.close()


def _request(model: str, name: str, x: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="r1")
    add_input(request, name, x)
    return request


def test_a_batch_gets_the_runtimes_answers(served, bundle: Bundle, digits) -> None:  # type: ignore[no-untyped-def]
    stub, runtime = served
    m = bundle.manifest
    x = np.ascontiguousarray(digits.x_test[:16], dtype=np.float32)
    response = stub.ModelInfer(_request(m.model, m.input.name, x), timeout=30)
    outputs = response_outputs(response)
    assert response.id == "r1" and outputs["probabilities"].shape == (16, len(m.classes))
    where = json.loads(str(get_param(response.parameters, ANSWERS)))
    single = [runtime.infer(sample) for sample in x]
    assert outputs["label"].tolist() == [a.label for a in single]
    np.testing.assert_allclose(outputs["probabilities"], np.stack([a.probabilities for a in single]), atol=1e-5)
    assert [w["source"] for w in where] == [a.source for a in single]
    assert {"exit", "cloud"} <= {w["source"] for w in where}  # some answered on the device, some by the cloud
    text = render(runtime.stats(), m.model)  # what --metrics serves: 16 batched + 16 single answers so far
    assert f'edgesplit_edge_requests_total{{model="{m.model}"}} 32' in text.splitlines()
    assert f'edgesplit_edge_latency_ms_count{{model="{m.model}"}} 32' in text.splitlines()


def test_metadata_and_readiness(served, bundle: Bundle) -> None:  # type: ignore[no-untyped-def]
    stub, _ = served
    m = bundle.manifest
    assert stub.ServerLive(pb.ServerLiveRequest()).live and stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=m.model)).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=m.model))
    assert list(meta.inputs[0].shape) == [-1, *m.input.sample_shape]
    assert [o.name for o in meta.outputs] == ["probabilities", "label"]


@pytest.mark.parametrize("case", ["unknown-model", "wrong-shape", "wrong-dtype", "wrong-name", "garbage-bytes"])
def test_bad_requests_get_a_status_and_the_edge_keeps_serving(served, bundle: Bundle, digits, case: str) -> None:  # type: ignore[no-untyped-def]
    stub, _ = served
    m = bundle.manifest
    x = np.ascontiguousarray(digits.x_test[:2], dtype=np.float32)
    request = {
        "unknown-model": lambda: _request("nope", m.input.name, x),
        "wrong-shape": lambda: _request(m.model, m.input.name, x.reshape(2, -1)),
        "wrong-dtype": lambda: _request(m.model, m.input.name, x.astype(np.float64)),
        "wrong-name": lambda: _request(m.model, "other", x),
        "garbage-bytes": lambda: _garbage(m.model, m.input.name, x),
    }[case]()
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=30)
    expected = grpc.StatusCode.NOT_FOUND if case == "unknown-model" else grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.code() == expected, err.value.details()
    assert "nope" in err.value.details() if case == "unknown-model" else err.value.details()
    good = stub.ModelInfer(_request(m.model, m.input.name, x), timeout=30)
    assert response_outputs(good)["label"].shape == (2,)


def _garbage(model: str, name: str, x: np.ndarray) -> pb.ModelInferRequest:
    request = _request(model, name, x)
    request.raw_input_contents[0] = b"\x00" * 7  # not the declared byte count
    return request
