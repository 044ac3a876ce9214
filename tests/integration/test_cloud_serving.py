"""The cloud under load, as a service: batching across edges gives each edge exactly its own answer, a full queue
refuses with a retry hint, metrics count what happened, new model versions load while requests keep flowing, and
SIGTERM drains what is in flight."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cloud.batcher import BatchConfig
from cloud.process import CloudProcess
from cloud.server import CloudConfig, CloudServer
from protos import inference_pb2 as pb
from protos import params
from protos.bundle import Bundle, Manifest, write_manifest
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait on a condition of the server (it offers no event for it)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)  # ok: polls a condition (queue depth, a loaded version) the server has no event for


def request(manifest: Manifest, split: int, x: np.ndarray, version: str = "", bundle_hash: str | None = None):  # type: ignore[no-untyped-def]
    req = pb.ModelInferRequest(model_name=manifest.model, model_version=version)
    add_input(req, manifest.split_point(split).tensor.name, x)
    set_param(req.parameters, params.SPLIT_POINT, split)
    if bundle_hash is not None:
        set_param(req.parameters, params.BUNDLE_HASH, bundle_hash)
    return req


def logits(response: pb.ModelInferResponse) -> np.ndarray:
    return next(iter(response_outputs(response).values()))


@pytest.fixture()
def serve() -> Iterator[Callable[..., tuple[CloudServer, GRPCInferenceServiceStub]]]:
    started: list[tuple[CloudServer, grpc.Channel]] = []

    def start(config: CloudConfig) -> tuple[CloudServer, GRPCInferenceServiceStub]:
        server = CloudServer(config)
        port = server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=10)
        started.append((server, channel))
        return server, GRPCInferenceServiceStub(channel)

    yield start
    for server, channel in started:
        channel.close()
        server.stop(grace=1.0)


def test_batched_answers_equal_each_edges_own_answer(bundle, digits, serve) -> None:  # type: ignore[no-untyped-def]
    batching = BatchConfig(max_batch_size=16, max_queue_delay_us=20_000)
    server, stub = serve(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, batching=batching))
    manifest = bundle.manifest
    split = manifest.split_points[0].index
    xs = digits.x_test[:48].astype(np.float32)
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda x: logits(stub.ModelInfer(request(manifest, split, x[None]), timeout=30)), xs))
    tail = ort.InferenceSession(str(bundle.file(manifest.split_point(split).tails["fp32"])))
    name = tail.get_inputs()[0].name
    for x, got in zip(xs, answers, strict=True):
        alone = tail.run(None, {name: x[None]})[0]
        np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)
        assert got.argmax() == alone.argmax()
    text = server.metrics.render(server.repository.models())
    runs = int(next(ln for ln in text.splitlines() if ln.startswith("edgesplit_cloud_batch_size_count")).split()[-1])
    assert runs < len(xs), "no batch formed: every request ran alone"


def test_a_full_queue_answers_resource_exhausted_with_a_retry_hint(bundle, serve) -> None:  # type: ignore[no-untyped-def]
    batching = BatchConfig(max_batch_size=64, max_queue_delay_us=400_000, max_queue_size=2)
    server, stub = serve(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, batching=batching))
    manifest = bundle.manifest
    split = manifest.split_points[0].index
    x = np.zeros((1, *manifest.split_point(split).tensor.sample_shape), np.float32)
    model = server.repository.get(manifest.model)
    queued = [stub.ModelInfer.future(request(manifest, split, x), timeout=30) for _ in range(2)]
    wait_until(lambda: model.queue_depth == 2)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request(manifest, split, x), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    hint = dict(refused.value.trailing_metadata() or ())
    assert int(hint["retry-after-ms"]) >= 1
    assert all(f.result().model_version == "1" for f in queued)  # the queued ones are answered, not lost
    counts = server.metrics.requests()
    assert counts["ModelInfer", manifest.model, "", "RESOURCE_EXHAUSTED"] == 1  # asked for no version
    assert counts["ModelInfer", manifest.model, "1", "OK"] == 2


def test_metrics_endpoint_counts_requests_errors_batches_and_versions(bundle, serve) -> None:  # type: ignore[no-untyped-def]
    server, stub = serve(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, metrics="127.0.0.1:0"))
    manifest = bundle.manifest
    split = manifest.split_points[0].index
    x = np.zeros((2, *manifest.split_point(split).tensor.sample_shape), np.float32)
    stub.ModelInfer(request(manifest, split, x), timeout=10)
    for bad in ("no-such-model", "../../etc/passwd"):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(pb.ModelInferRequest(model_name=bad), timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    m = manifest.model
    assert f'edgesplit_cloud_requests_total{{method="ModelInfer",model="{m}",version="1",code="OK"}} 1' in text
    assert 'edgesplit_cloud_requests_total{method="ModelInfer",model="",version="",code="NOT_FOUND"} 1' in text
    assert 'edgesplit_cloud_requests_total{method="ModelInfer",model="",version="",code="INVALID_ARGUMENT"} 1' in text
    assert f'edgesplit_cloud_batch_size_bucket{{model="{m}",version="1",le="2.0"}} 1' in text
    assert f'edgesplit_cloud_queue_depth{{model="{m}",version="1"}} 0' in text
    assert f'edgesplit_cloud_model_loaded{{model="{m}",version="1",hash="{manifest.content_hash}"}} 1' in text
    assert "passwd" not in text


def _new_version(bundle: Bundle, dest: Path) -> Manifest:
    """A copy of ``bundle`` whose artifacts (so its content hash) differ: one tail re-saved with a doc string."""
    shutil.copytree(bundle.root, dest)
    tail = bundle.manifest.split_points[0].tails["fp32"]
    model = onnx.load(str(dest / tail))
    model.doc_string = f"version at {dest.name}"
    onnx.save(model, str(dest / tail))
    return write_manifest(dest, bundle.manifest)


def test_a_new_version_hot_loads_and_the_old_retires_without_losing_a_request(bundle, serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = bundle.manifest
    root = tmp_path / "repo"
    shutil.copytree(bundle.root, root / manifest.model / "1")
    server, stub = serve(CloudConfig(repository=str(root), port=0, threads=1))
    split = manifest.split_points[0].index
    x = np.zeros((1, *manifest.split_point(split).tensor.sample_shape), np.float32)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = False

    def hammer() -> None:
        while not stop:
            try:
                seen.append(stub.ModelInfer(request(manifest, split, x), timeout=10).model_version)
            except grpc.RpcError as exc:
                errors.append(exc)

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(hammer) for _ in range(4)]
        wait_until(lambda: len(seen) > 20)
        v2 = _new_version(bundle, tmp_path / "staging")
        (tmp_path / "staging").rename(root / manifest.model / "2")  # published by a rename, as the docs say
        assert server.reload() == [f"loaded {manifest.model} version 2"]
        wait_until(lambda: seen[-1] == "2")
        both = stub.ModelInfer(request(manifest, split, x, bundle_hash=manifest.content_hash), timeout=10)
        assert both.model_version == "1"  # an edge built from version 1's bundle is answered by version 1
        shutil.rmtree(root / manifest.model / "1")
        assert server.reload() == [f"retired {manifest.model} version 1"]
        mark = len(seen)
        wait_until(lambda: len(seen) > mark + 20)
        stop = True
        for w in workers:
            w.result()
    assert errors == []
    assert seen[0] == "1" and set(seen[mark:]) == {"2"}
    with pytest.raises(grpc.RpcError) as gone:
        stub.ModelInfer(request(manifest, split, x, version="1"), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "versions: ['2']" in gone.value.details()
    with pytest.raises(grpc.RpcError) as stale:
        stub.ModelInfer(request(manifest, split, x, bundle_hash=manifest.content_hash), timeout=10)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.ModelInfer(request(manifest, split, x, bundle_hash=v2.content_hash), timeout=10).model_version == "2"


def test_polling_picks_up_a_version_and_skips_a_broken_one(bundle, serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = bundle.manifest
    root = tmp_path / "repo"
    shutil.copytree(bundle.root, root / manifest.model / "1")
    server, stub = serve(CloudConfig(repository=str(root), port=0, threads=1, poll_s=0.05))
    broken = root / manifest.model / "3"
    shutil.copytree(bundle.root, broken)
    (broken / manifest.split_points[0].tails["fp32"]).write_bytes(b"half-copied")
    _new_version(bundle, tmp_path / "staging")
    (tmp_path / "staging").rename(root / manifest.model / "2")

    def ready(version: str) -> bool:
        try:
            return stub.ModelReady(pb.ModelReadyRequest(name=manifest.model, version=version), timeout=5).ready
        except grpc.RpcError:
            return False

    wait_until(lambda: ready("2"))
    assert server.repository.versions(manifest.model) == ["1", "2"]
    assert not ready("3")


def test_sigterm_drains_requests_in_flight_and_logs_json(bundle) -> None:  # type: ignore[no-untyped-def]
    manifest = bundle.manifest
    split = manifest.split_points[0].index
    x = np.zeros((1, *manifest.split_point(split).tensor.sample_shape), np.float32)
    args = ["--threads", "1", "--max-queue-delay-us", "500000", "--max-batch-size", "64", "--log-format", "json"]
    cloud = CloudProcess([bundle.root], [*args, "--metrics", "127.0.0.1:0"])
    cloud.start()
    try:
        channel = grpc.insecure_channel(cloud.target)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=10)
        in_flight = [stub.ModelInfer.future(request(manifest, split, x), timeout=30) for _ in range(6)]
        wait_until(lambda: _queue_depth(cloud) == 6)
        assert cloud.process is not None
        cloud.process.send_signal(signal.SIGTERM)
        assert [f.result().model_version for f in in_flight] == ["1"] * 6
        assert cloud.process.wait(timeout=30) == 0
        channel.close()
    finally:
        cloud.stop()
    lines = [json.loads(line) for line in cloud.log.splitlines() if line.startswith("{")]
    failed = [e for e in lines if e["msg"] == "rpc failed"]
    assert failed and failed[0]["code"] == "NOT_FOUND" and failed[0]["model"] == "nope"
    assert any(e["msg"] == "stopped" and "drain_s" in e for e in lines)


def _queue_depth(cloud: CloudProcess) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{cloud.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return int(sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("edgesplit_cloud_queue_depth{")))
