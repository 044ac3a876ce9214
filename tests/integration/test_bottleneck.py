"""A learned bottleneck at a split point (issue 18), on a copy of the session's trained digits bundle: export and
manifest, parity of encoder -> decoder -> tail between torch and ONNX, the edge offloading through it to a real
in-process cloud, the errors for a split point without one, and the edge's fallback past the split."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch

from cloud.bottleneck import bottleneck_tail
from cloud.server import CloudConfig, CloudServer
from edge.client import CloudClient
from edge.errors import EdgeError
from edge.runtime import EdgeRuntime
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.bundle import MANIFEST, Bundle, BundleError, write_manifest
from protos.codecs import Codec, decode, encode
from protos.tensors import add_input, set_param
from split.bottleneck import BottleneckConfig, BottleneckSpec, Coder
from split.bottleneck_export import add_bottlenecks, trained_coder

SPEC = BottleneckSpec(2, 4, 2)
CONFIG = BottleneckConfig(epochs=8, max_samples=600)


@pytest.fixture(scope="module")
def bottlenecked(trained, digits, tmp_path_factory) -> tuple[Bundle, Coder, Any]:  # type: ignore[no-untyped-def]
    """(the bundle copy with a bottleneck at split point 2, the trained coder, the net)."""
    bundle, net, _ = trained
    root = tmp_path_factory.mktemp("bottleneck") / "bundle"
    shutil.copytree(bundle.root, root)
    cache = tmp_path_factory.mktemp("bottleneck-cache")
    copy = add_bottlenecks(Bundle.load(root), net, digits.x_train, [SPEC], CONFIG, cache=cache, progress=False)
    coder, report = trained_coder(copy, net, digits.x_train, SPEC, CONFIG, cache, progress=False)
    assert report["cached"]  # the coder the bundle was exported from
    return copy, coder, net


@pytest.fixture(scope="module")
def bn_cloud(bottlenecked) -> Iterator[str]:  # type: ignore[no-untyped-def]
    server = CloudServer(CloudConfig(bundles=(str(bottlenecked[0].root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield target
    server.stop(grace=1.0)


def _client(bundle: Bundle, target: str) -> CloudClient:
    client = CloudClient(target, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    client.wait_ready(timeout_s=10)
    return client


def test_manifest_records_the_bottleneck(bottlenecked) -> None:  # type: ignore[no-untyped-def]
    bundle = Bundle.load(bottlenecked[0].root)  # verifies every file and the content hash
    m = bundle.manifest
    assert m.bottleneck_splits == (2,)
    bn = m.bottleneck(2)
    assert bn.code.shape == (-1, 4, 4, 4) and bn.channels == 4 and bn.stride == 2
    assert set(bn.decoders) == {"fp32", "fp16", "int8", "int8c"} and bn.encoder in m.edge_files() and not bn.fused
    tail_bytes = bundle.file(m.split_point(2).tails["fp32"]).stat().st_size
    assert sum(bundle.file(f).stat().st_size for f in bn.decoders.values()) < tail_bytes  # no copies of the tail
    assert bn.training["samples"] == 600 and len(bn.training["loss"]) == 8
    assert bn.training["loss"][-1] < bn.training["loss"][0]
    data = json.loads((bundle.root / MANIFEST).read_text())
    assert [("bottleneck" in sp) for sp in data["split_points"]] == [False, False, True, False, False]
    assert m.split_point(2).tails == Bundle.load(bundle.root).manifest.split_point(2).tails  # the plain tail stays
    with pytest.raises(BundleError, match=r"split point 1 has no bottleneck; split points with one: \[2\]"):
        m.bottleneck(1)


def test_torch_and_onnx_agree(bottlenecked, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, coder, net = bottlenecked
    m, bn = bundle.manifest, bundle.manifest.bottleneck(2)
    x = digits.x_test[:32].astype(np.float32)
    with torch.no_grad():
        h = net.segments[1](net.segments[0](torch.from_numpy(x)))
        code = coder.encoder(h)
        out = coder.decoder(code)
        for segment in net.segments[2:]:
            out = segment(out)
    enc = ort.InferenceSession(str(bundle.file(bn.encoder)), providers=["CPUExecutionProvider"])
    onnx_code = enc.run(None, {m.split_point(2).tensor.name: h.numpy()})[0]
    assert onnx_code.shape == (32, 4, 4, 4) and onnx_code.dtype == np.float32
    np.testing.assert_allclose(onnx_code, code.numpy(), rtol=1e-4, atol=1e-5)
    tail = bottleneck_tail(bundle, 2, "fp32")  # the decoder, then the split point's own fp32 tail
    np.testing.assert_allclose(tail.run(None, {bn.code.name: onnx_code})[0], out.numpy(), rtol=1e-3, atol=1e-4)
    int8 = bottleneck_tail(bundle, 2, "int8")
    wire = encode(Codec.parse("int8"), bn.code.name, onnx_code[:1])
    reference = tail.run(None, {bn.code.name: decode("int8", bn.code.name, wire)})[0]
    np.testing.assert_allclose(int8.run(None, wire)[0], reference, rtol=1e-4, atol=1e-5)


def test_edge_offloads_the_code_to_the_cloud(bottlenecked, bn_cloud, digits) -> None:  # type: ignore[no-untyped-def]
    bundle = bottlenecked[0]
    client = _client(bundle, bn_cloud)
    runtime = EdgeRuntime(bundle, split=2, cloud=client, exits=False, bottleneck=True)
    plain = EdgeRuntime(bundle, split=2, cloud=client, exits=False, codec="int8")
    assert runtime.route.bottleneck and runtime.codec.name == "int8"  # the bottleneck's default codec
    x, y = digits.x_test[:60], digits.y_test[:60]
    answers = [runtime.infer(s) for s in x]
    plain_answers = [plain.infer(s) for s in x]
    assert all(a.source == "cloud" and a.split == 2 and a.degraded is None for a in answers)
    assert max(a.bytes_sent for a in answers) == 4 * 4 * 4 + 5  # the code, its scale and zero point
    assert answers[0].bytes_sent < plain_answers[0].bytes_sent / 7
    accuracy = np.mean([a.label for a in answers] == y)
    assert accuracy >= 0.5, accuracy  # the full model reaches ~0.8; chance is 0.1
    runtime.set_route(2, "int8+zstd", False, bottleneck=True)
    assert runtime.infer(x[0]).source == "cloud"
    runtime.set_route(2, "int8", False)  # the same split point without the bottleneck
    assert runtime.infer(x[0]).bytes_sent == plain_answers[0].bytes_sent
    client.close()


def test_a_split_point_without_a_bottleneck_is_refused(bottlenecked, bn_cloud, digits) -> None:  # type: ignore[no-untyped-def]
    bundle = bottlenecked[0]
    client = _client(bundle, bn_cloud)
    with pytest.raises(EdgeError, match=r"split point 1 has no bottleneck; split points with one: \[2\]"):
        EdgeRuntime(bundle, split=1, cloud=client, bottleneck=True)
    runtime = EdgeRuntime(bundle, split=2, cloud=client)
    with pytest.raises(EdgeError, match=r"split point 3 has no bottleneck; split points with one: \[2\]"):
        runtime.set_route(3, "int8", True, bottleneck=True)
    client.close()
    request = pb.ModelInferRequest(model_name=bundle.manifest.model)
    set_param(request.parameters, params.SPLIT_POINT, 1)
    set_param(request.parameters, params.BOTTLENECK, True)
    add_input(request, "b1", np.zeros((1, 8, 16, 16), np.float32))
    with grpc.insecure_channel(bn_cloud) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "split point 1 has no bottleneck; split points with one: [2]" in err.value.details()
    with pytest.raises(ValueError, match="SPLIT:CHANNELS"):
        BottleneckSpec.parse("2")
    with pytest.raises(BundleError, match="unknown split point 7"):
        add_bottlenecks(bundle, bottlenecked[2], digits.x_train, [BottleneckSpec(7, 2)], progress=False)


def test_fallback_past_the_split_runs_the_edge_segments(bottlenecked, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = bottlenecked[0]
    client = CloudClient("127.0.0.1:1", model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    runtime = EdgeRuntime(bundle, split=2, cloud=client, exits=False, bottleneck=True, deadline_ms=2000)
    local = EdgeRuntime(bundle, split=len(bundle.manifest.segments), exits=False)
    for sample in digits.x_test[:5]:
        answer = runtime.infer(sample)
        assert answer.source == "edge" and answer.degraded in ("unavailable", "breaker_open"), answer
        assert answer.label == local.infer(sample).label  # the edge's own segments, from the un-encoded tensor
    client.close()


def test_triton_export_writes_the_bottleneck_tails(bottlenecked, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edge.triton import model_name
    from split.triton import write_repository

    bundle = bottlenecked[0]
    models = {m.name: m for m in write_repository(bundle, tmp_path)}
    prefix = bundle.manifest.model
    int8 = models[f"{prefix}_s2_bn_int8"]
    assert int8.bottleneck and [s.name for s in int8.inputs] == ["b2_code", "b2_code_scale", "b2_code_zero_point"]
    assert f"{prefix}_s2_int8" in models and f"{prefix}_s1_bn_int8" not in models  # the plain tail stays
    assert model_name(prefix, 2, Codec.parse("int8"), bottleneck=True) == int8.name
    config = (tmp_path / int8.name / "config.pbtxt").read_text()
    assert '"edgesplit.bottleneck"' in config
    fused = ort.InferenceSession(str(tmp_path / int8.name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    code = np.random.default_rng(0).standard_normal((3, *bundle.manifest.bottleneck(2).code.sample_shape))
    wire = encode(Codec.parse("int8"), "b2_code", code.astype(np.float32))
    chained = bottleneck_tail(bundle, 2, "int8").run(None, wire)[0]  # what edgesplit cloud runs
    np.testing.assert_allclose(fused.run(None, wire)[0], chained, rtol=1e-4, atol=1e-4)


def test_a_first_bottleneck_bundle_with_fused_tails_still_serves(bottlenecked, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The first bottleneck bundles held decoder + a fused tail per wire format (``tails``); they still load."""
    import onnx

    from cloud.model import TailModel
    from split.chain import chain
    from split.wire import write_tail_variant

    root = tmp_path / "first"
    shutil.copytree(bottlenecked[0].root, root)
    data = json.loads((root / MANIFEST).read_text())
    sp = data["split_points"][2]
    parts = [onnx.load(str(root / f)) for f in (sp["bottleneck"]["decoders"]["fp32"], sp["tails"]["fp32"])]
    onnx.save(chain(parts), str(root / "bottlenecks/tail2.onnx"))
    write_tail_variant(root / "bottlenecks/tail2.onnx", "int8", root / "bottlenecks/tail2.int8.onnx")
    sp["bottleneck"]["tails"] = {"fp32": "bottlenecks/tail2.onnx", "int8": "bottlenecks/tail2.int8.onnx"}
    del sp["bottleneck"]["decoders"]
    (root / MANIFEST).write_text(json.dumps(data))
    manifest = Bundle.load(root, verify=False).manifest
    first = Bundle(root, write_manifest(root, manifest))
    assert first.manifest.bottleneck(2).fused and "decoders" not in first.manifest.to_json()
    code = np.random.default_rng(1).standard_normal((2, 4, 4, 4)).astype(np.float32)
    wire = encode(Codec.parse("int8"), "b2_code", code)
    served = TailModel(Bundle.load(root), threads=1).infer(2, wire, "int8", bottleneck=True)
    np.testing.assert_allclose(served, bottleneck_tail(bottlenecked[0], 2, "int8").run(None, wire)[0], atol=1e-4)


def test_profile_and_planner_consider_the_bottleneck(bottlenecked, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edge.planner import Network, candidates, cost_model, plan
    from split.profile import profile_bundle

    root = tmp_path / "profiled"
    shutil.copytree(bottlenecked[0].root, root)
    bundle = Bundle.load(root)
    profile_bundle(bundle, digits.x_cal[:120], digits.y_cal[:120], runs=3, codecs=("fp32", "int8"))
    bundle = Bundle.load(root)
    cost = bundle.manifest.split_point(2).cost or {}
    assert set(cost["bottleneck"]["wire"]) == {"fp32", "int8"} and cost["bottleneck"]["encoder_ms"] > 0
    costs = cost_model(bundle.manifest)
    wire = {sc.index: sc.wire for sc in costs.splits}
    assert "bottleneck:int8" in wire[2] and not any(k.startswith("bottleneck:") for k in wire[1])
    assert wire[2]["bottleneck:int8"].bytes < wire[2]["int8"].bytes / 7
    slow = Network(20e3, 5.0)  # 20 kbit/s: the bytes decide
    listed = {c.label: c for c in candidates(costs, slow)}
    through, plain = listed["split 2, bottleneck:int8, no exits"], listed["split 2, int8, no exits"]
    assert through.bottleneck and through.route_codec == "int8" and not plain.bottleneck
    assert through.latency_ms < plain.latency_ms
    chosen = plan(costs, slow, budget=1.0)  # any accuracy: a route the edge can take
    runtime = EdgeRuntime(bundle, split=4)
    if chosen.split < 4:
        runtime = EdgeRuntime(bundle, split=chosen.split, cloud=CloudClient("127.0.0.1:1", model="m", bundle_hash="h"))
    route = runtime.set_route(chosen.split, chosen.route_codec, chosen.exits, chosen.bottleneck)
    assert route.bottleneck == chosen.bottleneck and route.split == chosen.split


def test_the_edge_cli_offloads_through_the_bottleneck(bottlenecked, bn_cloud, digits, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from split.cli import main

    inputs = tmp_path / "x.npy"
    np.save(inputs, digits.x_test[:4])
    root = str(bottlenecked[0].root)
    assert main(["edge", "--bundle", root, "--cloud", bn_cloud, "--split", "2", "--bottleneck", "--no-exits",
                 "--input", str(inputs)]) == 0  # fmt: skip
    assert capsys.readouterr().out.count("cloud") >= 4
    bad = ["edge", "--bundle", root, "--cloud", bn_cloud, "--split", "1", "--bottleneck", "--input", str(inputs)]
    assert main(bad) == 1  # the CLI's one-line error, no traceback
    captured = capsys.readouterr()
    assert captured.err == "edgesplit edge: error: split point 1 has no bottleneck; split points with one: [2]\n"
    assert captured.out == ""


def test_export_refuses_a_bad_bottleneck_before_training(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from split.cli import main

    assert main(["export", "--out", str(tmp_path / "b"), "--dataset", "digits", "--bottleneck", "2x4"]) == 1
    assert "bad bottleneck '2x4': write SPLIT:CHANNELS" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_an_int8_edge_offloads_through_a_bottleneck_as_the_reference(  # type: ignore[no-untyped-def]
    int8_edge_bundle, trained, digits, tmp_path: Path
) -> None:
    """An int8 edge hands the encoder its uint8 boundary; what a real cloud answers equals the reference: the edge's
    ONNX segments, the boundary dequantized, the torch encoder (= its ONNX export), the int8 wire, the torch
    decoder and the frozen torch tail."""
    from edge.policy import softmax

    net = trained[1]
    root = tmp_path / "int8-bottleneck"
    shutil.copytree(int8_edge_bundle.root, root)
    config = BottleneckConfig(epochs=1, max_samples=200)  # parity, not accuracy: a short training will do
    bundle = add_bottlenecks(Bundle.load(root), net, digits.x_train, [SPEC], config, progress=False)
    boundary = bundle.manifest.segments[2].input
    assert boundary.datatype == "UINT8" and bundle.manifest.edge_precision == "int8"
    coder, _ = trained_coder(bundle, net, digits.x_train, SPEC, config, progress=False)
    x = digits.x_test[:8].astype(np.float32)
    head = [ort.InferenceSession(str(bundle.file(s.file)), providers=["CPUExecutionProvider"])
            for s in bundle.manifest.segments[:2]]  # fmt: skip
    h = head[1].run(None, {bundle.manifest.segments[1].input.name: head[0].run(None, {"input": x})[0]})[0]
    assert h.dtype == np.uint8
    real = (h.astype(np.float32) - np.float32(boundary.zero_point)) * np.float32(boundary.scale)
    encoder = ort.InferenceSession(str(bundle.file(bundle.manifest.bottleneck(2).encoder)),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    with torch.no_grad():
        torch_code = coder.encoder(torch.from_numpy(real)).numpy()
    np.testing.assert_allclose(encoder.run(None, {boundary.name: h})[0], torch_code, rtol=1e-4, atol=1e-5)
    server = CloudServer(CloudConfig(bundles=(str(root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    client = _client(bundle, target)
    try:
        runtime = EdgeRuntime(bundle, split=2, cloud=client, exits=False, bottleneck=True)
        answers = [runtime.infer(sample) for sample in x]
    finally:
        client.close()
        server.stop(grace=1.0)
    assert all(a.source == "cloud" and a.codec == "int8" and a.degraded is None for a in answers), answers
    for i, answer in enumerate(answers):
        code = encoder.run(None, {boundary.name: h[i : i + 1]})[0]  # the code the edge sent, through the wire
        with torch.no_grad():
            out = coder.decoder(
                torch.from_numpy(decode("int8", "b2_code", encode(Codec.parse("int8"), "b2_code", code)))
            )
            for segment in net.segments[2:]:
                out = segment(out)
        np.testing.assert_allclose(answer.probabilities, softmax(out.numpy())[0], rtol=1e-3, atol=1e-4)
