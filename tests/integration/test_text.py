"""Text bundles end to end: a tiny MobileBERT-style encoder trained on three fortune topics, exported with a
dynamic sequence length, run by the edge's text runtime, offloaded to a real cloud server, batched there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch

from cloud.batcher import BatchConfig
from cloud.model import TailModel
from edge.client import CloudClient
from edge.text import TextRuntime
from protos.bundle import Bundle, BundleError
from split.textcal import patience_hybrid
from split.textdata import load_fortunes
from split.textexport import export_text_bundle
from split.texttrain import TextConfig, layer_probs, train_text

LENGTHS = (1, 3, 17, 64)


@pytest.fixture(scope="session")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Bundle, Any]:
    torch.set_num_threads(1)
    data = load_fortunes(topics=("computers", "politics", "science"), per_class=80)
    cfg = TextConfig(family="mobilebert", depth=3, vocab_size=600, max_length=64, epochs=2, batch_size=32)
    model, tok = train_text(cfg, data)
    out = tmp_path_factory.mktemp("text") / "bundle"
    export_text_bundle(model, tok, out, model_name="topics", classes=data.classes)
    return model, tok, Bundle.load(out), data


def _torch_hidden(model: Any, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        x, m = torch.from_numpy(ids), torch.from_numpy(mask)
        hidden, out = model.embed(x), []
        for layer in model.layers:
            hidden = layer(hidden, m)
            out.append(hidden.numpy())
        out.append(model.exits[-1](hidden).numpy())
    return out


def test_every_split_point_matches_torch_at_many_lengths(text_model: tuple[Any, Any, Bundle, Any]) -> None:
    model, _, bundle, _ = text_model
    m = bundle.manifest
    depth = len(m.segments)
    rng = np.random.default_rng(0)
    for length in LENGTHS:
        ids = rng.integers(3, 500, (2, length)).astype(np.int64)
        mask = np.ones_like(ids)
        want = _torch_hidden(model, ids, mask)  # after layer 0 .. depth-1, then the logits
        for sp in m.split_points[:-1]:
            tail = ort.InferenceSession(str(bundle.file(sp.tails["fp32"])), providers=["CPUExecutionProvider"])
            feed = ids if sp.index == 0 else want[sp.index - 1]
            got = tail.run(None, {sp.tensor.name: feed, "attention_mask": mask})[0]
            assert got.shape == (2, len(m.classes)) and got.dtype == np.float32
            np.testing.assert_allclose(got, want[depth], rtol=1e-4, atol=1e-4, err_msg=f"split {sp.index}, L={length}")
        x = ids
        for seg in m.segments:
            session = ort.InferenceSession(str(bundle.file(seg.file)), providers=["CPUExecutionProvider"])
            x = session.run(None, {seg.input.name: x, "attention_mask": mask})[0]
            np.testing.assert_allclose(x, want[seg.index if seg.index < depth - 1 else depth], rtol=1e-4, atol=1e-4)
    assert json.loads((bundle.root / "manifest.json").read_text())["input"]["shape"] == [-1, -1]


def test_tokenizer_is_covered_by_the_content_hash(text_model: tuple[Any, Any, Bundle, Any], tmp_path: Path) -> None:
    _, _, bundle, _ = text_model
    assert "tokenizer.json" in bundle.manifest.artifact_files()
    copy = tmp_path / "b"
    import shutil

    shutil.copytree(bundle.root, copy)
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace("[UNK]", "[UNX]"))
    with pytest.raises(BundleError, match="content hash"):
        Bundle.load(copy)


def test_edge_patience_answers_as_calibration_predicts(text_model: tuple[Any, Any, Bundle, Any]) -> None:
    model, tok, bundle, data = text_model
    texts = data.test[0][:40]
    probs = layer_probs(model, tok, texts)
    want = patience_hybrid(probs, 1)
    runtime = TextRuntime(bundle, policy="patience", patience=1)
    answers = [runtime.infer(t) for t in texts]
    assert [a.label for a in answers] == want.preds.tolist()
    assert [a.segments_run - 1 for a in answers] == want.layer.tolist()
    assert any(a.source == "exit" for a in answers) or all(want.layer == len(probs) - 1)


@pytest.fixture()
def text_cloud(text_model: tuple[Any, Any, Bundle, Any]) -> Iterator[str]:
    from cloud.server import CloudConfig, CloudServer

    server = CloudServer(CloudConfig(bundles=(str(text_model[2].root),), port=0, threads=1))
    port = server.start()
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield target
    server.stop(grace=1.0)


@pytest.mark.parametrize(("split", "codec"), [(0, "fp32"), (1, "fp32"), (2, "fp16")])
def test_offload_answers_as_the_full_model(
    text_model: tuple[Any, Any, Bundle, Any], text_cloud: str, split: int, codec: str
) -> None:
    _, _, bundle, data = text_model
    client = CloudClient(text_cloud, model="topics", bundle_hash=bundle.manifest.content_hash)
    runtime = TextRuntime(bundle, client, split=split, codec=codec)  # thresholds -1: the exits never fire
    local = TextRuntime(bundle)
    for text in data.test[0][:6]:
        answer, full = runtime.infer(text), local.infer(text)
        assert answer.source == "cloud" and answer.split == split and answer.bytes_sent > 0
        assert answer.label == full.label and full.source == "edge"
        np.testing.assert_allclose(answer.probabilities, full.probabilities, atol=2e-3 if codec == "fp16" else 1e-5)
    client.close()


def test_cloud_down_answers_locally_and_says_why(text_model: tuple[Any, Any, Bundle, Any]) -> None:
    _, _, bundle, data = text_model
    client = CloudClient("127.0.0.1:1", model="topics", bundle_hash=bundle.manifest.content_hash, timeout_s=0.5)
    answer = TextRuntime(bundle, client, split=1).infer(data.test[0][0])
    assert answer.degraded == "unavailable" and answer.source == "edge"
    assert answer.label == TextRuntime(bundle).infer(data.test[0][0]).label
    client.close()


def test_batching_texts_of_different_lengths_never_changes_an_answer(
    text_model: tuple[Any, Any, Bundle, Any],
) -> None:
    _, tok, bundle, data = text_model
    runtime = TextRuntime(bundle, split=3)
    texts = sorted(data.test[0][:12], key=len)
    hidden = []
    for text in texts:
        ids, mask = tok.encode_one(text)
        x = runtime._segments[0].run(None, {"input_ids": ids, "attention_mask": mask})[0]
        hidden.append({"h1": x, "attention_mask": mask})
    assert len({h["h1"].shape[1] for h in hidden}) > 3
    sizes: list[int] = []
    model = TailModel(bundle, batching=BatchConfig(max_queue_delay_us=200_000), on_batch=lambda *a: sizes.append(a[2]))
    alone = [model.infer(1, feeds) for feeds in hidden]

    async def together() -> list[np.ndarray]:
        return await asyncio.gather(*(model.infer_async(1, feeds) for feeds in hidden))

    batched = asyncio.run(together())
    assert max(sizes) > 1  # some requests really shared a padded batch
    for one, many in zip(alone, batched, strict=True):
        assert one.argmax() == many.argmax()
        np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)
    model.close()


def test_export_data_csv_makes_a_text_bundle(tmp_path: Path) -> None:
    from split.cli import main

    data = load_fortunes(topics=("computers", "politics"), per_class=40)
    rows = zip(data.train[0] + data.test[0], [data.classes[i] for i in [*data.train[1], *data.test[1]]], strict=True)
    path = tmp_path / "mine.csv"
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    out = tmp_path / "bundle"
    args = ["export", "--out", str(out), "--data", str(path), "--epochs", "1", "--text-depth", "2"]
    assert main([*args, "--text-policy", "patience"]) == 0
    bundle = Bundle.load(out)
    assert bundle.manifest.classes == ("computers", "politics")
    assert bundle.manifest.preprocessing["policy"]["criterion"] == "patience"
    assert TextRuntime(bundle).infer("the computer crashed again").label in (0, 1)
    assert main(["profile", "--bundle", str(out), "--data", str(path), "--runs", "2"]) == 0
    assert Bundle.load(out).manifest.profile["text"]["tokens"] >= 1
    assert main(["plan", "--bundle", str(out), "--network", "4g", "--json", str(tmp_path / "plan.json")]) == 0
    assert json.loads((tmp_path / "plan.json").read_text())["plan"]["offload_rate"] == 0.0  # 2 tiny layers vs 60 ms
    assert main(["plan", "--bundle", str(out), "--network", "4g", "--rtt", "5"]) == 1  # not both


def _edge_args(*argv: str) -> Any:
    import argparse

    from edge.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_edge_subcommand_answers_texts(
    text_model: tuple[Any, Any, Bundle, Any], text_cloud: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import run

    _, _, bundle, data = text_model
    root = str(bundle.root)
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(data.test[0][1:3]).replace("\n\n", "\n") + "\n\n")
    want = TextRuntime(bundle)
    args = ["--bundle", root, "--text", data.test[0][0].replace("\n", " "), "--texts", str(lines), "--json", "-"]
    assert run(_edge_args(*args, "--cloud", text_cloud, "--split", "1")) == 0
    report = json.loads(capsys.readouterr().out)
    texts = [r["text"] for r in report["answers"]]
    assert len(texts) >= 3 and report["stats"]["answers"]["cloud"] == len(texts)
    assert [r["label"] for r in report["answers"]] == [bundle.manifest.classes[want.infer(t).label] for t in texts]
    assert {r["source"] for r in report["answers"]} == {"cloud"} and report["answers"][0]["split"] == 1
    assert run(_edge_args("--bundle", root, "--text", "the senate voted", "--json", str(tmp_path / "a.json"))) == 0
    local = json.loads((tmp_path / "a.json").read_text())["answers"][0]
    assert local["source"] == "edge" and local["degraded"] is None
    out = capsys.readouterr().out
    assert out.split("\t")[0] in bundle.manifest.classes  # the lines are printed too


def test_edge_subcommand_refuses_image_options_for_a_text_bundle(text_model: tuple[Any, Any, Bundle, Any]) -> None:
    from edge.cli import run

    root = str(text_model[2].root)
    with pytest.raises(ValueError, match="--input, --race take image and tensor bundles; a text bundle takes --text"):
        run(_edge_args("--bundle", root, "--input", "x.npy", "--race"))
    with pytest.raises(ValueError, match="--cloud-engine take image"):  # refused before connecting anywhere
        run(_edge_args("--bundle", root, "--text", "x", "--cloud", "127.0.0.1:1", "--cloud-engine", "triton"))
    with pytest.raises(ValueError, match="give --text TEXT"):
        run(_edge_args("--bundle", root))
    with pytest.raises(ValueError, match="split point 1 offloads, so it needs a client"):
        run(_edge_args("--bundle", root, "--text", "hi", "--split", "1"))


def test_cloud_down_every_text_answered_locally_and_the_breaker_opens(
    text_model: tuple[Any, Any, Bundle, Any],
) -> None:
    from edge.breaker import CircuitBreaker
    from edge.retry import RetryPolicy

    _, _, bundle, data = text_model
    client = CloudClient("127.0.0.1:1", model="topics", bundle_hash=bundle.manifest.content_hash, timeout_s=0.5)
    runtime = TextRuntime(
        bundle,
        client,
        split=1,
        breaker=CircuitBreaker(failures=3, cooldown_s=3600.0),
        retry=RetryPolicy(attempts=2, base_ms=0.0, jitter=0.0, min_attempt_ms=0.0),
    )
    local = TextRuntime(bundle)
    texts = data.test[0][:6]
    answers = [runtime.infer(t) for t in texts]
    assert [a.label for a in answers] == [local.infer(t).label for t in texts]
    assert all(a.source != "cloud" and a.degraded is not None for a in answers)
    # request 1: two tries fail; request 2: its first try opens the breaker (3 in a row); then no network at all
    assert [a.degraded for a in answers] == ["unavailable", "unavailable"] + ["breaker_open"] * 4
    stats = runtime.stats()
    assert stats["breaker"] == {"state": "open", "opened": 1}
    assert stats["requests"] == 6 and stats["offloads"] == 3 and stats["retries"] == 1
    assert stats["fallbacks"]["unavailable"] == 2 and stats["fallbacks"]["breaker_open"] == 4
    assert stats["answers"]["cloud"] == 0 and stats["bytes_sent"] > 0
    client.close()


def test_a_silent_cloud_costs_the_deadline_not_the_client_timeout(text_model: tuple[Any, Any, Bundle, Any]) -> None:
    import threading
    from concurrent import futures

    _, _, bundle, data = text_model
    release = threading.Event()

    def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(30.0)  # never answers in time: the test releases it at the end
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(hang)  # raw bytes in and out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = CloudClient(f"127.0.0.1:{port}", model="topics", bundle_hash=bundle.manifest.content_hash, timeout_s=60)
    runtime = TextRuntime(bundle, client, split=2, deadline_ms=300.0)
    answer = runtime.infer(data.test[0][0])
    release.set()
    client.close()
    server.stop(grace=None)
    assert answer.degraded == "deadline" and answer.source == "edge" and answer.segments_run == 3
    assert 250.0 <= answer.latency_ms < 20_000.0  # waited for its deadline, far less than the client's 60 s
    assert runtime.stats()["fallbacks"]["deadline"] == 1
    with pytest.raises(ValueError, match="deadline_ms must be a positive number"):
        TextRuntime(bundle, deadline_ms=0)


def test_offloads_are_counted(text_model: tuple[Any, Any, Bundle, Any], text_cloud: str) -> None:
    _, _, bundle, data = text_model
    client = CloudClient(text_cloud, model="topics", bundle_hash=bundle.manifest.content_hash)
    runtime = TextRuntime(bundle, client, split=1, deadline_ms=5000.0)
    answers = [runtime.infer(t) for t in data.test[0][:3]]
    stats = runtime.stats()
    assert stats["answers"]["cloud"] == 3 == stats["offloads"] and stats["retries"] == 0
    assert stats["bytes_sent"] == sum(a.bytes_sent for a in answers) and stats["breaker"]["state"] == "closed"
    assert stats["latency_ms"]["count"] == 3
    client.close()


def test_text_profile_feeds_the_planner(text_model: tuple[Any, Any, Bundle, Any], tmp_path: Path) -> None:
    import shutil

    from edge.planner import TEXT, Network, candidates, cost_model, plan
    from split.textprofile import profile_text_bundle

    _, tok, bundle, data = text_model
    root = tmp_path / "b"
    shutil.copytree(bundle.root, root)
    raw = json.loads((root / "manifest.json").read_text())
    raw["preprocessing"]["policy"] = {"criterion": "patience", "patience": 1}  # exits that fire
    (root / "manifest.json").write_text(json.dumps(raw))
    texts, labels = data.cal[0][:40], data.cal[1][:40]
    m = profile_text_bundle(Bundle.load(root), texts, labels, runs=2)
    p, n = m.profile, len(m.segments)
    lengths = [tok.encode_one(t)[0].shape[1] for t in texts]
    assert p["text"]["tokens"] == int(np.median(lengths)) and len(p["segment_ms"]) == n
    zero, one = m.split_point(0).cost, m.split_point(1).cost
    assert zero is not None and one is not None
    assert zero["wire"][TEXT]["bytes"] == pytest.approx(np.mean([len(t.encode()) for t in texts]))
    assert zero["wire"]["fp32"]["bytes"] == pytest.approx(16 * np.mean(lengths))  # int64 ids + int64 mask
    width = m.segments[0].output.shape[-1]
    assert one["wire"]["fp32"]["bytes"] == pytest.approx((4 * width + 8) * np.mean(lengths))
    assert one["wire"]["fp16"]["bytes"] == pytest.approx((2 * width + 8) * np.mean(lengths))
    runtime = TextRuntime(Bundle.load(root))
    answers = [runtime.infer(t) for t in texts]
    last = m.split_point(n).cost
    assert last is not None
    for e in m.exits:  # the profile's exit rates are what the edge does
        assert last["exit_rates"][e.name] == pytest.approx(np.mean([a.exit == e.name for a in answers]))
    right = [a.label == y for a, y in zip(answers, labels, strict=True)]
    assert last["accuracy_exits"] == pytest.approx(np.mean(right))
    assert any(a.source == "exit" for a in answers)
    assert {a.source for a in map(TextRuntime(Bundle.load(root), exits=False).infer, texts)} == {"edge"}
    costs = cost_model(m)
    chosen = plan(costs, Network(5.85e6, 60.0), budget=1.0)
    # a tiny encoder on this host against a 60 ms round trip: every text answered on the device (where every
    # text exits before a split point, that split point ties with edge-only)
    assert chosen.offload_rate == 0.0 and chosen.latency_ms < 60.0
    text_route = [c for c in candidates(costs, Network(5.85e6, 60.0)) if c.codec == TEXT]
    assert len(text_route) == 1 and text_route[0].offload_rate == 1.0 and text_route[0].latency_ms > 60.0
