"""Bad requests against a real cloud server: the exact status code, a details message that names what was
wrong, and a server that keeps answering valid requests afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from cloud.server import CloudConfig, CloudServer
from protos import inference_pb2 as pb
from protos import params
from protos.bundle import Manifest
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param

Build = Callable[[Manifest], tuple[pb.ModelInferRequest, list[str]]]


@pytest.fixture()
def stub(cloud: str) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(cloud) as channel:
        yield GRPCInferenceServiceStub(channel)


def _request(manifest: Manifest, array: np.ndarray | None = None, name: str | None = None) -> pb.ModelInferRequest:
    """A request at split point 1: ``array`` (default: one zero sample) under the split tensor's name."""
    spec = manifest.split_point(1).tensor
    if array is None:
        array = np.zeros((1, *spec.sample_shape), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=manifest.model, id="req-1")
    add_input(request, name or spec.name, array)
    set_param(request.parameters, params.BUNDLE_HASH, manifest.content_hash)
    set_param(request.parameters, params.SPLIT_POINT, 1)
    return request


def _assert_serving(stub: GRPCInferenceServiceStub, manifest: Manifest) -> None:
    """A valid ModelInfer still answers with one row of class logits."""
    response = stub.ModelInfer(_request(manifest), timeout=30)
    logits = response_outputs(response)[manifest.output.name]
    assert logits.dtype == np.float32
    assert logits.shape == (1, len(manifest.classes))
    assert np.isfinite(logits).all()


def _expect(call: Callable[[], object], code: grpc.StatusCode, words: list[str]) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert error.code() == code, error.details()
    details = error.details() or ""
    for word in words:
        assert word in details, f"{word!r} not in {details!r}"
    return details


# --- builders: each returns a bad request and the words its error details must contain ---------------------


def _hash_mismatch(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    set_param(request.parameters, params.BUNDLE_HASH, "sha256:" + "0" * 64)
    return request, ["sha256:" + "0" * 64, m.content_hash, m.model]


def _dtype(datatype: type) -> Build:
    def build(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
        spec = m.split_point(1).tensor
        array: np.ndarray = np.zeros((1, *spec.sample_shape), dtype=datatype)
        return _request(m, array), [spec.name, "datatype", "FP32", np.dtype(datatype).name]

    return build


def _shape(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    spec = m.split_point(1).tensor
    wrong = (1, *spec.sample_shape[:-1], spec.sample_shape[-1] + 1)
    expected = f"[N, {', '.join(map(str, spec.sample_shape))}]"
    return _request(m, np.zeros(wrong, dtype=np.float32)), [spec.name, "shape", expected, str(list(wrong))]


def _batch(size: int) -> Build:
    def build(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
        spec = m.split_point(1).tensor
        array = np.zeros((size, *spec.sample_shape), dtype=np.float32)
        return _request(m, array), [spec.name, f"batch size {size} not in 1.."]

    return build


def _byte_count(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    data = request.raw_input_contents[0]
    request.raw_input_contents[0] = data[:-4]
    return request, [m.split_point(1).tensor.name, str(len(data) - 4), str(len(data))]


def _two_inputs(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    add_input(request, "second", np.zeros((1, 3), dtype=np.float32))
    return request, ["takes inputs", "second"]


def _unknown_split(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    set_param(request.parameters, params.SPLIT_POINT, 99)
    valid = [sp.index for sp in m.split_points if sp.tail is not None]
    return request, ["split point 99", str(valid)]


def _unknown_input(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    spec = m.split_point(1).tensor
    request = _request(m, name="nope")
    del request.parameters[params.SPLIT_POINT]
    return request, ["'nope'", repr(spec.name), repr(m.input.name)]


def _unknown_model(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    request.model_name = "nope"
    return request, ["'nope'", m.model]


def _unknown_version(m: Manifest) -> tuple[pb.ModelInferRequest, list[str]]:
    request = _request(m)
    request.model_version = "7"
    return request, [m.model, "'7'", "'1'"]


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("build", "code"),
    [
        pytest.param(_hash_mismatch, grpc.StatusCode.FAILED_PRECONDITION, id="bundle-hash"),
        pytest.param(_dtype(np.float64), INVALID, id="dtype-fp64"),
        pytest.param(_dtype(np.int32), INVALID, id="dtype-int32"),
        pytest.param(_shape, INVALID, id="shape"),
        pytest.param(_batch(0), INVALID, id="batch-0"),
        pytest.param(_batch(1025), INVALID, id="batch-1025"),
        pytest.param(_byte_count, INVALID, id="byte-count"),
        pytest.param(_two_inputs, INVALID, id="two-inputs"),
        pytest.param(_unknown_split, INVALID, id="split-point-99"),
        pytest.param(_unknown_input, INVALID, id="input-name"),
        pytest.param(_unknown_model, NOT_FOUND, id="model"),
        pytest.param(_unknown_version, NOT_FOUND, id="version"),
    ],
)
def test_bad_infer_request(stub: GRPCInferenceServiceStub, bundle, build: Build, code: grpc.StatusCode) -> None:
    manifest = bundle.manifest
    request, words = build(manifest)
    _expect(lambda: stub.ModelInfer(request, timeout=30), code, words)
    _assert_serving(stub, manifest)


@pytest.mark.parametrize("version", ["", "7"], ids=["no-version", "bad-version"])
@pytest.mark.parametrize("rpc", ["ModelMetadata", "ModelReady"])
def test_unknown_model_metadata_and_ready(stub: GRPCInferenceServiceStub, bundle, rpc: str, version: str) -> None:
    manifest = bundle.manifest
    request_type = getattr(pb, f"{rpc}Request")
    name = "nope" if version == "" else manifest.model
    words = ["'nope'", manifest.model] if version == "" else [manifest.model, "'7'"]
    call = getattr(stub, rpc)
    _expect(lambda: call(request_type(name=name, version=version), timeout=30), NOT_FOUND, words)
    _assert_serving(stub, manifest)


def test_split_point_without_tail_is_refused(stub: GRPCInferenceServiceStub, bundle) -> None:
    """The last split point (edge only) is in the manifest but has no tail to run."""
    manifest = bundle.manifest
    last = manifest.split_points[-1]
    assert last.tail is None
    request = _request(manifest)
    set_param(request.parameters, params.SPLIT_POINT, last.index)
    _expect(lambda: stub.ModelInfer(request, timeout=30), INVALID, [f"split point {last.index}"])
    _assert_serving(stub, manifest)


def test_split_param_disagrees_with_input_name(stub: GRPCInferenceServiceStub, bundle) -> None:
    manifest = bundle.manifest
    request = _request(
        manifest,
        np.zeros((1, *manifest.split_point(2).tensor.sample_shape), np.float32),
        name=manifest.split_point(2).tensor.name,
    )
    expected = manifest.split_point(1).tensor.name
    _expect(lambda: stub.ModelInfer(request, timeout=30), INVALID, ["split point 1", f"{expected!r}"])
    _assert_serving(stub, manifest)


@pytest.fixture()
def small_server(bundle) -> Iterator[tuple[GRPCInferenceServiceStub, int]]:
    """A dedicated server whose message limit is 64 KiB."""
    limit = 64 * 1024
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, max_message_bytes=limit))
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            yield GRPCInferenceServiceStub(channel), limit
    finally:
        server.stop(grace=1.0)


def test_message_over_the_limit(small_server: tuple[GRPCInferenceServiceStub, int], bundle) -> None:
    stub, limit = small_server
    manifest = bundle.manifest
    sample = manifest.split_point(1).tensor.sample_shape
    batch = limit // (4 * int(np.prod(sample))) + 1  # just over the limit in raw bytes alone
    request = _request(manifest, np.zeros((batch, *sample), dtype=np.float32))
    assert request.ByteSize() > limit
    _expect(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.RESOURCE_EXHAUSTED, [str(limit)])
    _assert_serving(stub, manifest)
