"""The cloud server speaks KServe v2 and gRPC health: liveness, metadata, inference parity with the bundle's
own ONNX tails, typed and raw contents, and the health service's Check, List and Watch."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from cloud.server import CloudConfig, CloudServer
from protos import health_pb2, health_pb2_grpc, params
from protos import inference_pb2 as pb
from protos.bundle import Manifest, TensorSpec
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param

SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture()
def channel(cloud: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(cloud) as ch:
        yield ch


@pytest.fixture()
def stub(channel: grpc.Channel) -> GRPCInferenceServiceStub:
    return GRPCInferenceServiceStub(channel)


@pytest.fixture()
def health(channel: grpc.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


def _sample(spec: TensorSpec, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *spec.sample_shape)).astype(np.float32)


def _request(manifest: Manifest, split: int, array: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=manifest.model, id=f"split-{split}")
    add_input(request, manifest.split_point(split).tensor.name, array)
    set_param(request.parameters, params.SPLIT_POINT, split)
    set_param(request.parameters, params.BUNDLE_HASH, manifest.content_hash)
    return request


def _logits(response: pb.ModelInferResponse, manifest: Manifest) -> np.ndarray:
    outputs = response_outputs(response)
    assert list(outputs) == [manifest.output.name]
    return outputs[manifest.output.name]


def test_server_live_and_ready(stub: GRPCInferenceServiceStub, bundle) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=bundle.manifest.model), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=bundle.manifest.model, version="1"), timeout=10).ready


def test_server_metadata(stub: GRPCInferenceServiceStub) -> None:
    assert stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10).name == "edgesplit"


def _assert_tensor(meta: pb.ModelMetadataResponse.TensorMetadata, spec: TensorSpec) -> None:
    assert (meta.name, meta.datatype, tuple(meta.shape)) == (spec.name, spec.datatype, spec.shape)


def test_model_metadata(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=manifest.model), timeout=10)
    assert meta.name == manifest.model
    assert meta.platform == "onnxruntime_onnx"
    assert list(meta.versions) == ["1"]
    assert len(meta.inputs) == 1 and len(meta.outputs) == 1
    _assert_tensor(meta.inputs[0], manifest.input)
    _assert_tensor(meta.outputs[0], manifest.output)


def _tail_splits(manifest: Manifest) -> list[int]:
    return [sp.index for sp in manifest.split_points if sp.tail is not None]


def test_every_split_point_matches_its_onnx_tail(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    splits = _tail_splits(manifest)
    assert splits, "the bundle has no tails"
    for split in splits:
        sp = manifest.split_point(split)
        array = _sample(sp.tensor, seed=split)
        got = _logits(stub.ModelInfer(_request(manifest, split, array), timeout=30), manifest)
        session = ort.InferenceSession(str(bundle.file(sp.tail)), providers=["CPUExecutionProvider"])
        want = session.run(None, {sp.tensor.name: array})[0]
        assert got.dtype == np.float32 and got.shape == (2, len(manifest.classes)), split
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"split point {split}")


def test_split_point_inferred_from_input_name(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    split = _tail_splits(manifest)[-1]
    array = _sample(manifest.split_point(split).tensor)
    with_param = _logits(stub.ModelInfer(_request(manifest, split, array), timeout=30), manifest)
    request = _request(manifest, split, array)
    del request.parameters[params.SPLIT_POINT]
    without = _logits(stub.ModelInfer(request, timeout=30), manifest)
    np.testing.assert_array_equal(without, with_param)


def test_typed_contents_give_the_same_logits_as_raw(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    spec = manifest.split_point(1).tensor
    array = _sample(spec, batch=3)
    raw = _logits(stub.ModelInfer(_request(manifest, 1, array), timeout=30), manifest)
    typed = pb.ModelInferRequest(model_name=manifest.model)
    tensor = typed.inputs.add(name=spec.name, datatype="FP32", shape=array.shape)
    tensor.contents.fp32_contents.extend(array.ravel().tolist())
    set_param(typed.parameters, params.SPLIT_POINT, 1)
    assert not typed.raw_input_contents
    got = _logits(stub.ModelInfer(typed, timeout=30), manifest)
    assert got.shape == (3, len(manifest.classes))
    np.testing.assert_array_equal(got, raw)


def test_request_id_is_echoed(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    request = _request(manifest, 1, _sample(manifest.split_point(1).tensor, batch=1))
    request.id = "edge-42/7"
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "edge-42/7"
    assert (response.model_name, response.model_version) == (manifest.model, "1")


@pytest.mark.parametrize("service", ["", SERVICE], ids=["server", "inference"])
def test_health_check_serving(health: health_pb2_grpc.HealthStub, service: str) -> None:
    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == SERVING


def test_health_check_unknown_service(health: health_pb2_grpc.HealthStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (info.value.details() or "")


def test_health_list(health: health_pb2_grpc.HealthStub) -> None:
    statuses = health.List(health_pb2.HealthListRequest(), timeout=10).statuses
    assert {name: s.status for name, s in statuses.items()} == {"": SERVING, SERVICE: SERVING}


@pytest.mark.parametrize("service", ["", SERVICE], ids=["server", "inference"])
def test_health_watch_starts_with_serving(health: health_pb2_grpc.HealthStub, service: str) -> None:
    stream = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
    try:
        assert next(stream).status == SERVING
    finally:
        stream.cancel()


def test_health_watch_sees_not_serving_on_stop(bundle) -> None:
    """Stopping drains in-flight RPCs: the watcher gets NOT_SERVING, then its stream ends with OK."""
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1))
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(stream).status == SERVING
            server.stop(grace=10.0)
            rest = [message.status for message in stream]
            assert stream.code() == grpc.StatusCode.OK
    finally:
        server.stop(grace=1.0)
    assert rest == [NOT_SERVING]
