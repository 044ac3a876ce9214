"""End to end over a real gRPC server (a subprocess on 127.0.0.1): the hybrid equals the full model where the
cloud answered, and each answer says where it came from."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cloud.process import CloudProcess
from edge.client import CloudClient
from edge.policy import softmax
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle


@pytest.fixture(scope="module")
def cloud_process(bundle):  # type: ignore[no-untyped-def]
    with CloudProcess([bundle.root]) as process:
        yield process


@pytest.fixture(scope="module")
def torch_outputs(trained, digits):  # type: ignore[no-untyped-def]
    _, net, _ = trained
    with torch.no_grad():
        final, exits = net.forward_all(torch.from_numpy(digits.x_test))
    return final.numpy(), [e.numpy() for e in exits]


def _client(bundle: Bundle, target: str, content_hash: str | None = None) -> CloudClient:
    client = CloudClient(target, model=bundle.manifest.model, bundle_hash=content_hash or bundle.manifest.content_hash)
    client.wait_ready(timeout_s=30)
    return client


def test_hybrid_equals_full_model_where_cloud_answered(bundle, digits, cloud_process, torch_outputs) -> None:  # type: ignore[no-untyped-def]
    final, exits = torch_outputs
    # Exit half of the samples at exit0 (median confidence), so both paths are exercised.
    threshold = float(np.median(softmax(exits[0]).max(-1)))
    hybrid = Bundle(bundle.root, bundle.manifest.with_thresholds({"exit0": threshold}, {}))
    client = _client(bundle, cloud_process.target)
    runtime = EdgeRuntime(hybrid, split=2, cloud=client)
    answers = [runtime.infer(x) for x in digits.x_test]
    client.close()
    sources = {a.source for a in answers}
    assert sources == {"exit", "cloud"}, sources
    for i, a in enumerate(answers):
        if a.source == "cloud":
            assert a.label == int(final[i].argmax()) and a.split == 2
            assert a.bytes_sent == int(np.prod(bundle.manifest.split_point(2).tensor.sample_shape)) * 4
            np.testing.assert_allclose(a.probabilities, softmax(final[i]), rtol=1e-4, atol=1e-5)
        else:
            assert a.exit in ("exit0", "exit1") and a.bytes_sent == 0


@pytest.mark.parametrize("split", [0, 1, 3])
def test_every_split_point_gives_full_model_answers(bundle, digits, cloud_process, torch_outputs, split) -> None:  # type: ignore[no-untyped-def]
    final, _ = torch_outputs
    client = _client(bundle, cloud_process.target)
    runtime = EdgeRuntime(bundle, split=split, cloud=client, exits=False)
    labels = [runtime.infer(x).label for x in digits.x_test[:50]]
    client.close()
    assert labels == [int(v) for v in final[:50].argmax(-1)]


def test_other_bundle_is_rejected_and_cloud_keeps_serving(bundle, digits, cloud_process, caplog) -> None:  # type: ignore[no-untyped-def]
    stale = _client(bundle, cloud_process.target, content_hash="sha256:" + "0" * 64)
    runtime = EdgeRuntime(bundle, split=0, cloud=stale, exits=False)
    with caplog.at_level(logging.WARNING):
        answer = runtime.infer(digits.x_test[0])
    assert "FAILED_PRECONDITION" in caplog.text  # the edge says why, and still answers: locally, degraded
    assert answer.source == "edge" and answer.degraded == "rejected"
    assert runtime.stats()["fallbacks"].get("rejected") == 1 and runtime.stats()["offloads"] == 1  # not retried
    stale.close()
    good = _client(bundle, cloud_process.target)
    assert EdgeRuntime(bundle, split=0, cloud=good, exits=False).infer(digits.x_test[0]).source == "cloud"
    good.close()
