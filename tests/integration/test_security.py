"""The cloud's security against real servers on 127.0.0.1: TLS, mutual TLS, bearer tokens, strict model names and
hostile tensor shapes; the edge over TLS with a token, a wrong token (answered locally, degraded ``rejected``), and
round robin over two replicas that keeps answering when one of them stops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cloud.model import TailModel
from cloud.repository import ModelRepository
from cloud.server import CloudConfig, CloudServer
from edge.channel import ClientTLS
from edge.client import CloudClient
from edge.errors import CloudRejected
from edge.runtime import EdgeRuntime
from protos import health_pb2, health_pb2_grpc, params
from protos import inference_pb2 as pb
from protos.bundle import Bundle, Manifest
from protos.credentials import bearer_metadata
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param

PKI = Any  # tests/conftest.py's PKI: the test certificates' PEM files
TOKENS = ("first-token-0123456789abcdef", "second-token-0123456789abcdef")
WRONG = "wrong-token-0123456789abcdef"
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def repository(bundle: Bundle) -> ModelRepository:
    """One set of ONNX sessions shared by the servers of this module (loading is the slow part of a start)."""
    repository = ModelRepository(lambda b, version: TailModel(b, version, threads=1))
    repository.add_bundles([bundle.root])
    return repository


class CountingRepository:
    """A repository that counts the models it hands out: how many inference calls its server served."""

    def __init__(self, inner: ModelRepository) -> None:
        self.inner, self.served = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __contains__(self, name: object) -> bool:
        return name in self.inner

    def get(self, name: str, version: str = "", content_hash: object = None) -> Any:
        self.served += 1
        return self.inner.get(name, version, content_hash)


@contextmanager
def _server(bundle: Bundle, repository: Any, **config: Any) -> Iterator[CloudServer]:
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, **config), repository)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1.0)


def _credentials(pki: PKI, client: str | None = None, ca: str | None = None) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ca`` (default: the test CA), presenting the ``client`` certificate if named."""
    key = cert = None
    if client is not None:
        key, cert = (Path(getattr(pki, f"{client}_{part}")).read_bytes() for part in ("key", "cert"))
    root = Path(ca or pki.ca).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


@contextmanager
def _stub(port: int, credentials: grpc.ChannelCredentials | None = None) -> Iterator[GRPCInferenceServiceStub]:
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with channel:
        yield GRPCInferenceServiceStub(channel)


def _request(manifest: Manifest) -> pb.ModelInferRequest:
    spec = manifest.split_point(1).tensor
    request = pb.ModelInferRequest(model_name=manifest.model)
    add_input(request, spec.name, np.zeros((1, *spec.sample_shape), dtype=np.float32))
    set_param(request.parameters, params.SPLIT_POINT, 1)
    set_param(request.parameters, params.BUNDLE_HASH, manifest.content_hash)
    return request


def _assert_serving(stub: GRPCInferenceServiceStub, manifest: Manifest, metadata: Any = None) -> None:
    response = stub.ModelInfer(_request(manifest), timeout=30, metadata=metadata)
    assert response_outputs(response)[manifest.output.name].shape == (1, len(manifest.classes))


def _expect(call: Callable[[], object], code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    return info.value.details() or ""


# --- TLS and mutual TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_port(bundle: Bundle, repository: ModelRepository, pki: PKI) -> Iterator[int]:
    with _server(bundle, repository, tls_cert=pki.server_cert, tls_key=pki.server_key) as server:
        with grpc.secure_channel(f"127.0.0.1:{server.port}", _credentials(pki)) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        yield server.port


@pytest.fixture(scope="module")
def mtls_port(bundle: Bundle, repository: ModelRepository, pki: PKI) -> Iterator[int]:
    tls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    with _server(bundle, repository, **tls) as server:
        with grpc.secure_channel(f"127.0.0.1:{server.port}", _credentials(pki, "client")) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        yield server.port


def test_tls_request_succeeds(tls_port: int, pki: PKI, bundle: Bundle) -> None:
    with _stub(tls_port, _credentials(pki)) as stub:
        _assert_serving(stub, bundle.manifest)


def test_plaintext_client_against_tls_server_fails(tls_port: int) -> None:
    with _stub(tls_port) as stub:
        _expect(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10), UNAVAILABLE)


def test_client_refuses_a_server_its_ca_did_not_sign(tls_port: int, pki: PKI) -> None:
    with _stub(tls_port, _credentials(pki, ca=pki.other_ca)) as stub:
        _expect(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10), UNAVAILABLE)


def test_mtls_without_client_certificate_fails(mtls_port: int, pki: PKI) -> None:
    with _stub(mtls_port, _credentials(pki)) as stub:
        _expect(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10), UNAVAILABLE)


def test_mtls_with_client_certificate_succeeds(mtls_port: int, pki: PKI, bundle: Bundle) -> None:
    with _stub(mtls_port, _credentials(pki, "client")) as stub:
        _assert_serving(stub, bundle.manifest)


def test_mtls_client_certificate_from_another_ca_fails(mtls_port: int, pki: PKI) -> None:
    with _stub(mtls_port, _credentials(pki, "other_client")) as stub:
        _expect(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10), UNAVAILABLE)


# --- bearer tokens -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_port(bundle: Bundle, repository: ModelRepository) -> Iterator[int]:
    with _server(bundle, repository, auth_tokens=TOKENS) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        yield server.port


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(None, id="no-token"),
        pytest.param(bearer_metadata(WRONG), id="wrong-token"),
        pytest.param((("authorization", TOKENS[0]),), id="no-scheme"),
        pytest.param((("authorization", f"Basic {TOKENS[0]}"),), id="other-scheme"),
        pytest.param((("x-api-key", TOKENS[0]),), id="other-header"),
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(token_port: int, bundle: Bundle, metadata: Any) -> None:
    with _stub(token_port) as stub:
        details = _expect(
            lambda: stub.ModelInfer(_request(bundle.manifest), timeout=10, metadata=metadata), UNAUTHENTICATED
        )
        assert "authorization: Bearer <token>" in details
        assert WRONG not in details and not any(t in details for t in TOKENS)
        _expect(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10, metadata=metadata), UNAUTHENTICATED)
        name = bundle.manifest.model
        _expect(
            lambda: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10, metadata=metadata), UNAUTHENTICATED
        )


@pytest.mark.parametrize("token", TOKENS, ids=["first", "second"])
def test_either_rotated_token_is_accepted(token_port: int, bundle: Bundle, token: str) -> None:
    with _stub(token_port) as stub:
        _assert_serving(stub, bundle.manifest, bearer_metadata(token))
        _assert_serving(stub, bundle.manifest, (("authorization", f"bearer {token}"),))  # the scheme in any case


def test_health_needs_no_token(token_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{token_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert health.List(health_pb2.HealthListRequest(), timeout=10).statuses


def test_tokens_are_not_in_the_config_repr(bundle: Bundle) -> None:
    config = CloudConfig(bundles=(str(bundle.root),), port=0, auth_tokens=TOKENS)
    assert not any(t in repr(config) for t in TOKENS)


# --- model names and tensor shapes -------------------------------------------------------------------------------

BAD_NAMES = ["../x", "a/b", "..", "", "x" * 200, "a..b", "/etc/passwd", ".hidden", "name\n", "a\\b", "名前"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_path_like_model_names_are_invalid(cloud: str, bundle: Bundle, name: str) -> None:
    manifest = bundle.manifest
    with grpc.insecure_channel(cloud) as channel:
        stub = GRPCInferenceServiceStub(channel)
        request = _request(manifest)
        request.model_name = name
        details = _expect(lambda: stub.ModelInfer(request, timeout=10), INVALID)
        assert "model name" in details and "starting with a letter or digit" in details and len(details) < 400
        _expect(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10), INVALID)
        _expect(lambda: stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10), INVALID)
        _assert_serving(stub, manifest)


@pytest.mark.parametrize("version", ["../1", "1/..", "..", "v" * 129])
def test_path_like_versions_are_invalid(cloud: str, bundle: Bundle, version: str) -> None:
    manifest = bundle.manifest
    with grpc.insecure_channel(cloud) as channel:
        stub = GRPCInferenceServiceStub(channel)
        request = _request(manifest)
        request.model_version = version
        assert "model version" in _expect(lambda: stub.ModelInfer(request, timeout=10), INVALID)
        call = stub.ModelReady
        _expect(lambda: call(pb.ModelReadyRequest(name=manifest.model, version=version), timeout=10), INVALID)
        _assert_serving(stub, manifest)


@pytest.mark.parametrize(
    ("shape", "raw", "words"),
    [
        pytest.param([1 << 40, 1 << 40], True, ["elements", "at most"], id="huge-raw"),
        pytest.param([1 << 40, 1 << 40], False, ["elements", "at most"], id="huge-typed"),
        pytest.param([1 << 62, 1 << 62, 1 << 62], True, ["elements", "at most"], id="overflowing"),
        pytest.param([-1, 3], True, ["every dimension must be >= 0"], id="negative-raw"),
        pytest.param([-2, -3], False, ["every dimension must be >= 0"], id="negative-typed"),
    ],
)
def test_hostile_shapes_are_refused_before_allocation(
    cloud: str, bundle: Bundle, shape: list[int], raw: bool, words: list[str]
) -> None:
    manifest = bundle.manifest
    request = pb.ModelInferRequest(model_name=manifest.model)
    request.inputs.add(name=manifest.split_point(1).tensor.name, datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"\0" * 24)
    else:
        request.inputs[0].contents.fp32_contents.extend([0.0] * 6)
    with grpc.insecure_channel(cloud) as channel:
        stub = GRPCInferenceServiceStub(channel)
        details = _expect(lambda: stub.ModelInfer(request, timeout=10), INVALID)
        assert all(word in details for word in words), details
        _assert_serving(stub, manifest)


# --- the edge: TLS and token end to end, a wrong token, round robin -------------------------------------------


@pytest.fixture(scope="module")
def secure_port(bundle: Bundle, repository: ModelRepository, pki: PKI) -> Iterator[int]:
    """Mutual TLS and tokens together."""
    tls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    with _server(bundle, repository, auth_tokens=TOKENS, **tls) as server:
        with grpc.secure_channel(f"127.0.0.1:{server.port}", _credentials(pki, "client")) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        yield server.port


def _edge(bundle: Bundle, client: CloudClient) -> EdgeRuntime:
    """An edge that offloads every request at split point 1 (no exits), with a generous deadline."""
    return EdgeRuntime(bundle, cloud=client, split=1, exits=False, deadline_ms=5000)


def test_edge_offloads_over_mutual_tls_with_a_token(secure_port: int, bundle: Bundle, pki: PKI, digits) -> None:  # type: ignore[no-untyped-def]
    m = bundle.manifest
    tls = ClientTLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    client = CloudClient(
        f"127.0.0.1:{secure_port}", model=m.model, bundle_hash=m.content_hash, tls=tls, token=TOKENS[1]
    )
    try:
        client.wait_ready(timeout_s=10)
        assert client.ping() > 0
        answers = [_edge(bundle, client).infer(x) for x in digits.x_test[:5]]
    finally:
        client.close()
    assert all(a.source == "cloud" and a.degraded is None and a.bytes_sent > 0 for a in answers), answers


def test_edge_with_a_wrong_token_answers_locally_marked_rejected(  # type: ignore[no-untyped-def]
    secure_port: int, bundle: Bundle, pki: PKI, digits
) -> None:
    m = bundle.manifest
    tls = ClientTLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key, server_name="localhost")
    client = CloudClient(f"127.0.0.1:{secure_port}", model=m.model, bundle_hash=m.content_hash, tls=tls, token=WRONG)
    try:
        with pytest.raises(CloudRejected, match="UNAUTHENTICATED"):
            client.wait_ready(timeout_s=10)
        runtime = _edge(bundle, client)
        answers = [runtime.infer(x) for x in digits.x_test[:4]]
    finally:
        client.close()
    assert all(a.source == "edge" and a.degraded == "rejected" for a in answers), answers
    stats = runtime.stats()
    assert stats["fallbacks"]["rejected"] == 4 and stats["breaker"]["state"] == "closed"


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "tls-token"])
def test_round_robin_over_two_replicas_survives_one_stopping(  # type: ignore[no-untyped-def]
    bundle: Bundle, repository: ModelRepository, pki: PKI, digits, secure: bool
) -> None:
    config: dict[str, Any] = {"auth_tokens": TOKENS, "tls_cert": pki.server_cert, "tls_key": pki.server_key}
    config = config if secure else {}
    counters = [CountingRepository(repository), CountingRepository(repository)]
    with _server(bundle, counters[0], **config) as first, _server(bundle, counters[1], **config) as second:
        m = bundle.manifest
        client = CloudClient(
            f"127.0.0.1:{first.port},127.0.0.1:{second.port}",
            model=m.model,
            bundle_hash=m.content_hash,
            tls=ClientTLS(ca=pki.ca) if secure else None,
            token=TOKENS[0] if secure else None,
        )
        try:
            client.wait_ready(timeout_s=10)
            runtime = _edge(bundle, client)
            samples = digits.x_test
            for i in range(200):  # the second replica connects while the first serves; both serve within 200 calls
                assert runtime.infer(samples[i % len(samples)]).source == "cloud"
                if all(c.served for c in counters):
                    break
            before = [c.served for c in counters]
            answers = [runtime.infer(x) for x in samples[:20]]
            spread = [c.served - b for c, b in zip(counters, before, strict=True)]
            first.stop(grace=1.0)
            stopped_at = counters[0].served
            after = [runtime.infer(x) for x in samples[:20]]
        finally:
            client.close()
    assert all(a.source == "cloud" for a in answers) and min(spread) >= 5, spread  # round robin: 10 and 10
    assert all(a.source == "cloud" and a.degraded is None for a in after), after
    assert counters[0].served == stopped_at and counters[1].served >= before[1] + spread[1] + 20
