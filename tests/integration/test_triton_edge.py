"""The edge offloads to a real Triton serving the exported repository (``--cloud-engine triton``).

For every split point and wire format the edge's :class:`~edge.triton.TritonClient` gets from Triton the logits
that :class:`~edge.client.CloudClient` gets from ``edgesplit cloud``; ``edgesplit edge --cloud-engine triton``
answers as ``edgesplit edge`` against ``edgesplit cloud`` does. The bundle-hash handshake refuses a stale
repository's model (the edge answers locally, logs it once, counts it), and several ``IP:PORT`` spread the
requests round robin over two Triton replicas (seen in each replica's own statistics).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cloud.tritonserver import TritonServer
from edge.client import CloudClient
from edge.runtime import EdgeRuntime
from edge.triton import TritonClient, model_name
from protos.bundle import WIRE_FORMATS, Bundle
from protos.codecs import Codec
from split.cli import main

pytestmark = pytest.mark.triton

STALE, INT8_EDGE = "stale", "int8edge"  # as conftest.py exports the repository (see there)
N = 12


def _samples(digits, n: int = N) -> np.ndarray:  # type: ignore[no-untyped-def]
    return digits.x_test[:n].astype(np.float32)


def _stats(server: TritonServer, model: str) -> int:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as reply:
        (stats,) = json.load(reply)["model_stats"]
    return int(stats.get("inference_count", 0))


def _counted(servers: tuple[TritonServer, ...], model: str, total: int, timeout_s: float = 10.0) -> list[int]:
    """Each server's inference count once they add up to ``total`` (or at ``timeout_s``): Triton updates its
    statistics after it has sent the response, so the last answers may not be counted yet when they arrive."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = [_stats(server, model) for server in servers]
        if sum(counts) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.01)  # ok: Triton's statistics have no event to wait on; polled, bounded by timeout_s


@pytest.fixture()
def triton_client(bundle: Bundle, triton: TritonServer) -> Iterator[TritonClient]:
    client = TritonClient(triton.grpc_target, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    client.wait_ready(30)
    yield client
    client.close()


def test_the_edge_gets_edgesplit_clouds_logits_from_triton(  # type: ignore[no-untyped-def]
    bundle: Bundle, cloud: str, triton_client: TritonClient, digits
) -> None:
    manifest = bundle.manifest
    ours = CloudClient(cloud, model=manifest.model, bundle_hash=manifest.content_hash)
    x = _samples(digits, 4)
    seen = 0
    for sp in manifest.split_points:
        tensor = x
        for segment in manifest.segments[: sp.index]:
            session = ort.InferenceSession(str(bundle.file(segment.file)), providers=["CPUExecutionProvider"])
            tensor = session.run(None, {segment.input.name: tensor})[0]
        for fmt in (f for f in WIRE_FORMATS if f in sp.tails):
            codec = Codec(fmt)
            assert triton_client.verify(sp.index, codec) is None
            theirs = triton_client.infer(sp.index, sp.tensor.name, tensor, codec=codec)
            want = ours.infer(sp.index, sp.tensor.name, tensor, codec=codec)
            np.testing.assert_allclose(theirs.logits, want.logits, rtol=1e-5, atol=1e-5, err_msg=f"s{sp.index} {fmt}")
            assert theirs.bytes_sent == want.bytes_sent
            seen += 1
    ours.close()
    assert seen == sum(f in sp.tails for sp in manifest.split_points for f in WIRE_FORMATS)
    assert not triton_client.refused


@pytest.mark.parametrize("codec", ["fp32", "int8"])
def test_edge_cli_offloads_to_triton_as_to_edgesplit_cloud(  # type: ignore[no-untyped-def]
    bundle: Bundle, cloud: str, triton: TritonServer, digits, tmp_path: Path, capsys, codec: str
) -> None:
    np.save(tmp_path / "x.npy", _samples(digits))
    argv = ["edge", "--bundle", str(bundle.root), "--input", str(tmp_path / "x.npy"), "--no-exits", "--codec", codec]
    outputs = {}
    for engine, target in (("edgesplit", cloud), ("triton", triton.grpc_target)):
        assert main([*argv, "--cloud", target, "--cloud-engine", engine]) == 0
        outputs[engine] = capsys.readouterr()
    lines = outputs["triton"].out.splitlines()
    assert len(lines) == N and all(line.endswith("\tcloud") for line in lines), outputs["triton"]
    assert lines == outputs["edgesplit"].out.splitlines()
    assert "answering locally" not in outputs["triton"].err


@pytest.mark.parametrize("codec", ["fp32", "int8"])
def test_a_stale_repository_is_refused_answered_locally_logged_and_counted(  # type: ignore[no-untyped-def]
    bundle: Bundle, triton: TritonServer, digits, caplog, codec: str
) -> None:
    manifest = bundle.manifest
    client = TritonClient(triton.grpc_target, model=STALE, bundle_hash=manifest.content_hash)
    client.wait_ready(30)
    split = manifest.default_split
    runtime = EdgeRuntime(bundle, split=split, cloud=client, exits=False, codec=codec)
    stale = model_name(STALE, split, Codec(codec))
    before = _stats(triton, stale)
    with caplog.at_level(logging.ERROR, logger="edge.triton"):
        answers = [runtime.infer(x) for x in _samples(digits)]
    assert [(a.source, a.degraded) for a in answers] == [("edge", "rejected")] * N
    assert runtime.stats()["fallbacks"]["rejected"] == N
    assert client.refused == {stale: N}
    refusals = [r for r in caplog.records if r.name == "edge.triton"]
    assert len(refusals) == 1 and "another bundle" in refusals[0].getMessage() and stale in refusals[0].getMessage()
    assert _stats(triton, stale) == before, "a refused model must get no request"
    client.close()


def test_missing_models_and_compressed_codecs_are_refused(bundle: Bundle, triton_client: TritonClient) -> None:
    split = bundle.manifest.default_split
    assert "cannot decompress" in (triton_client.verify(split, Codec.parse("int8+zstd")) or "")
    assert "no usable model" in (triton_client.verify(len(bundle.manifest.segments) + 5, Codec("fp32")) or "")


def test_round_robin_over_two_triton_replicas(  # type: ignore[no-untyped-def]
    bundle: Bundle, triton: TritonServer, triton_repo: Path, triton_venv: Path, digits, tmp_path: Path
) -> None:
    manifest = bundle.manifest
    split = manifest.default_split
    name = model_name(manifest.model, split, Codec("fp32"))
    small = tmp_path / "repo"
    shutil.copytree(triton_repo / name, small / name)  # the second replica: the one model this edge uses
    with TritonServer(small, triton_venv) as second:
        targets = f"{triton.grpc_target},{second.grpc_target}"
        client = TritonClient(targets, model=manifest.model, bundle_hash=manifest.content_hash)
        client.wait_ready(30)
        before = (_stats(triton, name), _stats(second, name))
        runtime = EdgeRuntime(bundle, split=split, cloud=client, exits=False, codec="fp32")
        answers = [runtime.infer(x) for x in _samples(digits)]
        after = _counted((triton, second), name, sum(before) + N)
        client.close()
    assert all(a.source == "cloud" for a in answers)
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == N and min(served) >= N // 4, f"requests per replica: {served}"  # 6/6 when both are up


@pytest.mark.parametrize("codec", ["fp32", "int8"])
def test_an_int8_edge_offloads_to_triton_as_to_edgesplit_cloud(  # type: ignore[no-untyped-def]
    int8_edge_bundle: Bundle, triton: TritonServer, digits, codec: str
) -> None:
    """The int8 edge's boundary is uint8: int8 sends it as it is (with its own scale), fp32 its float value."""
    from cloud.server import CloudConfig, CloudServer

    manifest = int8_edge_bundle.manifest
    assert manifest.segments[manifest.default_split].input.quantized
    server = CloudServer(CloudConfig(bundles=(str(int8_edge_bundle.root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    clients = {
        "triton": TritonClient(triton.grpc_target, model=INT8_EDGE, bundle_hash=manifest.content_hash),
        "edgesplit": CloudClient(target, model=manifest.model, bundle_hash=manifest.content_hash),
    }
    answers = {}
    try:
        for engine, client in clients.items():
            client.wait_ready(30)
            runtime = EdgeRuntime(int8_edge_bundle, cloud=client, exits=False, codec=codec)
            answers[engine] = [runtime.infer(x) for x in _samples(digits)]
            client.close()
    finally:
        server.stop(grace=1.0)
    assert all(a.source == "cloud" and a.degraded is None for a in answers["triton"])
    for theirs, ours in zip(answers["triton"], answers["edgesplit"], strict=True):
        assert theirs.bytes_sent == ours.bytes_sent
        np.testing.assert_allclose(theirs.probabilities, ours.probabilities, rtol=1e-5, atol=1e-6)
