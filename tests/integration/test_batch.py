"""Batches with per-sample exits: each segment runs once on the samples left, exited samples leave the batch, the
rest are offloaded together, and every answer is the batch-of-one runtime's; a cloud that is down loses none."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.batch import BatchRunner, infer_batch
from edge.client import CloudClient
from edge.runtime import Answer, EdgeRuntime
from protos.bundle import Bundle

B = 64


@pytest.fixture(scope="module")
def halving(bundle: Bundle, digits) -> Bundle:  # type: ignore[no-untyped-def]
    """The bundle with each exit's threshold at the median score of the samples that reach it (about half exit
    at each), halfway between two scores so that no sample sits on a threshold."""
    assert all(e.criterion == "max_softmax" for e in bundle.manifest.exits)
    n, thresholds = len(bundle.manifest.segments), dict[str, float]()
    for spec in bundle.manifest.exits:
        probe = {**thresholds, spec.name: 0.0}  # this exit takes every sample that reaches it
        runtime = EdgeRuntime(Bundle(bundle.root, bundle.manifest.with_thresholds(probe, {})), split=n)
        scores = sorted(a.confidence for a in map(runtime.infer, digits.x_test[:B]) if a.exit == spec.name)
        k = len(scores) // 2
        thresholds[spec.name] = (scores[k - 1] + scores[k]) / 2
    return Bundle(bundle.root, bundle.manifest.with_thresholds(thresholds, {}))


@pytest.fixture()
def client(bundle: Bundle, cloud: str) -> Iterator[CloudClient]:
    client = CloudClient(cloud, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    client.wait_ready()
    yield client
    client.close()


@pytest.fixture()
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(model file, rows) of every ONNX Runtime session run on the edge (a spy around the real method)."""
    calls: list[tuple[str, int]] = []
    real_run = ort.InferenceSession.run

    def spy(self, output_names, input_feed, run_options=None):  # type: ignore[no-untyped-def]
        calls.append((Path(self._model_path).name, len(next(iter(input_feed.values())))))
        return real_run(self, output_names, input_feed, run_options)

    monkeypatch.setattr(ort.InferenceSession, "run", spy)
    return calls


def _same(batched: list[Answer], single: list[Answer]) -> None:
    assert len(batched) == len(single)
    for b, s in zip(batched, single, strict=True):
        assert (b.label, b.source, b.exit, b.split, b.segments_run, b.codec, b.degraded) == (
            s.label,
            s.source,
            s.exit,
            s.split,
            s.segments_run,
            s.codec,
            s.degraded,
        )
        np.testing.assert_allclose(b.probabilities, s.probabilities, atol=1e-5)


@pytest.mark.parametrize(
    ("split", "codec", "exits"),
    [(None, "fp32", True), (1, "fp32", True), (0, "fp32", False), (2, "int8+zstd", True)],
    ids=["edge-only-exits", "split1-exits", "split0", "split2-int8-exits"],
)
def test_batched_answers_are_the_batch_of_one_answers(  # type: ignore[no-untyped-def]
    halving: Bundle, client: CloudClient, digits, split: int | None, codec: str, exits: bool
) -> None:
    n = len(halving.manifest.segments)
    runtime = EdgeRuntime(halving, cloud=client, split=n if split is None else split, codec=codec, exits=exits)
    x = digits.x_test[:B]
    single = [runtime.infer(sample) for sample in x]
    batched = infer_batch(runtime, x)
    _same(batched, single)
    sources = {a.source for a in batched}
    assert sources == ({"exit", "edge"} if split is None else {"exit", "cloud"} if exits else {"cloud"})
    assert runtime.stats()["requests"] == 2 * B
    cloud = [a for a in batched if a.source == "cloud"]
    assert all(a.bytes_sent > 0 for a in cloud)


def test_exited_samples_never_reach_later_segments(halving: Bundle, digits, runs) -> None:  # type: ignore[no-untyped-def]
    n = len(halving.manifest.segments)
    runner = BatchRunner(EdgeRuntime(halving, split=n))
    assert runner.per_sample == frozenset()  # the export's batch dimension is dynamic
    runs.clear()
    answers = runner.infer(digits.x_test[:B])
    left = [sum(a.segments_run > i for a in answers) for i in range(n)]  # samples that entered segment i
    assert left[0] == B and 0 < left[-1] < left[1] < B  # some exit at every head, some go to the end
    expected = []
    for i in range(n):
        expected.append((f"seg{i}.onnx", left[i]))
        if i + 1 < n:
            expected.append((f"exit{i}.onnx", left[i]))
    assert runs == expected  # each segment and exit head runs once, on exactly the samples still in the batch


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_cloud_still_answers_every_sample_degraded(halving: Bundle, digits) -> None:  # type: ignore[no-untyped-def]
    m = halving.manifest
    client = CloudClient(f"127.0.0.1:{_closed_port()}", model=m.model, bundle_hash=m.content_hash, timeout_s=1.0)
    try:
        runtime = EdgeRuntime(halving, cloud=client, split=1, deadline_ms=300)
        answers = BatchRunner(runtime).infer(digits.x_test[:B])
    finally:
        client.close()
    local = infer_batch(EdgeRuntime(halving, split=len(m.segments)), digits.x_test[:B])
    assert len(answers) == B
    for a, ref in zip(answers, local, strict=True):
        assert a.source in ("exit", "edge")
        assert (a.label, a.exit) == (ref.label, ref.exit)  # the local model's answer, exits checked past the split
        assert a.degraded == (None if a.segments_run == 1 and a.source == "exit" else "unavailable")
    assert sum(a.degraded == "unavailable" for a in answers) > B // 4
    assert runtime.stats()["offloads"] >= 1


def test_a_batch_of_the_wrong_shape_is_refused(bundle: Bundle) -> None:
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    with pytest.raises(ValueError, match=r"shape \[B, 1, 16, 16\]"):
        infer_batch(runtime, np.zeros((1, 16, 16), np.float32))
    assert infer_batch(runtime, np.zeros((0, 1, 16, 16), np.float32)) == []
