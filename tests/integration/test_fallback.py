"""The edge keeps answering when the cloud does not: a real cloud server behind netsim (a blackhole, refused and
reset connections, a slow link), a server that sheds load, and one that serves another bundle.

Every request gets an answer within the deadline plus ``MARGIN_MS`` (generous: this runs on a small shared
machine); the breaker opens, keeps requests off the network, and closes again after a health check once the
cloud is back; racing returns the local answer when the cloud is slow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from edge.breaker import CLOSED, CircuitBreaker
from edge.client import CloudClient
from edge.retry import RetryPolicy
from edge.runtime import Answer, EdgeRuntime
from netsim import NetSim, Toxic
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.bundle import Bundle

DEADLINE_MS = 300.0
MARGIN_MS = 250.0
RECOVERY_S = 10.0  # offloading must be back within this after the cloud is
PACE_S = 0.02  # requests arrive every 20 ms while waiting for recovery
LOCAL = {"deadline", "unavailable", "overloaded", "breaker_open"}


@pytest.fixture()
def proxied(cloud: str) -> Iterator[tuple[NetSim, str]]:
    """netsim in front of the cloud: (the simulator, the address the edge talks to)."""
    with NetSim() as sim:
        yield sim, sim.create_proxy("cloud", cloud)


def _client(bundle: Bundle, target: str, content_hash: str | None = None) -> CloudClient:
    m = bundle.manifest
    client = CloudClient(
        target, model=m.model, bundle_hash=content_hash or m.content_hash, max_reconnect_backoff_ms=200
    )
    client.wait_ready(timeout_s=10)
    return client


def _runtime(bundle: Bundle, client: CloudClient, **kwargs: object) -> EdgeRuntime:
    kwargs.setdefault("breaker", CircuitBreaker(failures=3, cooldown_s=0.5))
    kwargs.setdefault("deadline_ms", DEADLINE_MS)
    return EdgeRuntime(bundle, cloud=client, **kwargs)  # type: ignore[arg-type]


def _assert_answered_locally(answers: list[Answer], deadline_ms: float = DEADLINE_MS) -> None:
    for a in answers:
        assert a.source in ("exit", "edge") and a.degraded in LOCAL, a
        assert a.latency_ms <= deadline_ms + MARGIN_MS, a
        assert 0 <= a.label < len(a.probabilities)
        assert np.isclose(a.probabilities.sum(), 1.0, atol=1e-4)


def _recovered(runtime: EdgeRuntime, samples: np.ndarray) -> list[Answer]:
    """Send paced requests until one is answered by the cloud, for at most ``RECOVERY_S``; the answers."""
    start, answers = time.monotonic(), list[Answer]()
    while time.monotonic() - start < RECOVERY_S:
        answers.append(runtime.infer(samples[len(answers) % len(samples)]))
        if answers[-1].source == "cloud":
            break
        time.sleep(PACE_S)  # ok: paces requests as an app would while the breaker cools down; not a readiness wait
    return answers


@pytest.mark.parametrize("split", [0, 2])
def test_blackhole_every_request_is_answered_degraded_within_the_deadline(  # type: ignore[no-untyped-def]
    bundle: Bundle, proxied: tuple[NetSim, str], digits, split: int
) -> None:
    sim, target = proxied
    client = _client(bundle, target)
    runtime = _runtime(bundle, client, split=split, exits=False)
    assert runtime.infer(digits.x_test[0]).source == "cloud"
    sim.add_toxic("cloud", Toxic("timeout", "upstream", {"timeout": 0}))  # requests vanish, nothing comes back
    answers = [runtime.infer(x) for x in digits.x_test[:8]]
    short = runtime.infer(digits.x_test[8], deadline_ms=100)  # a per-request deadline
    _assert_answered_locally(answers)
    _assert_answered_locally([short], deadline_ms=100)
    reasons = [a.degraded for a in answers]
    assert reasons[0] == "deadline" and "breaker_open" in reasons  # timed out, then the breaker kept it local
    stats = runtime.stats()
    assert stats["breaker"]["opened"] >= 1 and stats["fallbacks"]["deadline"] >= 1
    assert sum(stats["fallbacks"].values()) == 9
    sim.remove_toxic("cloud", "timeout_upstream")
    after = _recovered(runtime, digits.x_test)
    assert after[-1].source == "cloud", f"no offload within {RECOVERY_S}s of the recovery: {runtime.stats()}"
    assert runtime.breaker.state == CLOSED
    client.close()


def test_breaker_opens_stays_off_the_network_and_closes_after_recovery(  # type: ignore[no-untyped-def]
    bundle: Bundle, proxied: tuple[NetSim, str], digits
) -> None:
    sim, target = proxied
    client = _client(bundle, target)
    runtime = _runtime(bundle, client, split=0, exits=False, breaker=CircuitBreaker(failures=3, cooldown_s=1.0))
    sim.set_enabled("cloud", False)  # connections refused
    answers = [runtime.infer(x) for x in digits.x_test[:10]]
    _assert_answered_locally(answers)
    assert answers[0].degraded == "unavailable" and answers[-1].degraded == "breaker_open"
    tried = runtime.stats()["offloads"]
    assert tried >= 3
    more = [runtime.infer(x) for x in digits.x_test[10:20]]  # within the cool-down: no try at all
    assert {a.degraded for a in more} == {"breaker_open"}
    assert runtime.stats()["offloads"] == tried
    sim.set_enabled("cloud", True)
    after = _recovered(runtime, digits.x_test)
    assert after[-1].source == "cloud", f"no offload within {RECOVERY_S}s of the recovery: {runtime.stats()}"
    assert runtime.breaker.state == CLOSED
    assert all(runtime.infer(x).source == "cloud" for x in digits.x_test[:5])  # offloading resumed for good
    assert runtime.stats()["answers"]["cloud"] >= 6
    client.close()


def test_reset_connections_every_request_is_answered(  # type: ignore[no-untyped-def]
    bundle: Bundle, proxied: tuple[NetSim, str], digits
) -> None:
    sim, target = proxied
    client = _client(bundle, target)
    runtime = _runtime(bundle, client, split=0, exits=True, breaker=CircuitBreaker(failures=1000))
    sim.add_toxic("cloud", Toxic("reset_peer", "upstream", {"timeout": 0}))
    with ThreadPoolExecutor(3) as pool:  # concurrent requests, as an edge node serving several apps
        answers = list(pool.map(runtime.infer, digits.x_test[:15]))
    assert len(answers) == 15
    _assert_answered_locally(answers)
    assert runtime.stats()["retries"] >= 1  # a reset is transient: tried again while the deadline allowed
    sim.remove_toxic("cloud", "reset_peer_upstream")
    after = _recovered(runtime, digits.x_test)
    assert after[-1].source == "cloud", f"no offload within {RECOVERY_S}s of the recovery: {runtime.stats()}"
    client.close()


def test_racing_returns_the_local_answer_when_the_cloud_is_slow(  # type: ignore[no-untyped-def]
    bundle: Bundle, proxied: tuple[NetSim, str], digits
) -> None:
    sim, target = proxied
    client = _client(bundle, target)
    n = len(bundle.manifest.segments)
    reference = EdgeRuntime(bundle, split=n, exits=False)
    runtime = _runtime(bundle, client, split=1, exits=False, race=True, deadline_ms=5000)
    sim.add_toxic("cloud", Toxic("latency", "downstream", {"latency": 1500}))
    answers = [runtime.infer(x) for x in digits.x_test[:6]]
    for a, x in zip(answers, digits.x_test[:6], strict=True):
        assert (a.source, a.degraded, a.segments_run) == ("edge", None, n)
        assert a.latency_ms < 1000  # the cloud needs 1500 ms at least
        assert a.label == reference.infer(x).label
    stats = runtime.stats()
    assert stats["race_local_wins"] == 6 and stats["offloads"] == 6 and stats["breaker"]["state"] == CLOSED
    client.close()


def test_racing_against_a_healthy_cloud_gives_the_full_models_answers(  # type: ignore[no-untyped-def]
    bundle: Bundle, cloud: str, digits
) -> None:
    client = _client(bundle, cloud)
    n = len(bundle.manifest.segments)
    reference = EdgeRuntime(bundle, split=n, exits=False)
    runtime = _runtime(bundle, client, split=0, exits=False, race=True, deadline_ms=5000)
    answers = [runtime.infer(x) for x in digits.x_test[:20]]
    assert all(a.degraded is None and a.source in ("cloud", "edge") for a in answers)
    assert [a.label for a in answers] == [reference.infer(x).label for x in digits.x_test[:20]]
    stats = runtime.stats()
    assert stats["answers"]["cloud"] + stats["race_local_wins"] == 20
    client.close()


def test_a_rejection_is_answered_on_the_edge_logged_and_not_retried(  # type: ignore[no-untyped-def]
    bundle: Bundle, cloud: str, digits, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(bundle, cloud, content_hash="sha256:" + "0" * 64)  # the cloud serves another bundle
    runtime = _runtime(bundle, client, split=0, exits=True)
    with caplog.at_level(logging.WARNING, logger="edgesplit.edge"):
        answers = [runtime.infer(x) for x in digits.x_test[:5]]
    assert all(a.source in ("exit", "edge") and a.degraded == "rejected" for a in answers)
    assert "FAILED_PRECONDITION" in caplog.text
    stats = runtime.stats()
    assert stats["offloads"] == 5 and stats["retries"] == 0 and stats["fallbacks"]["rejected"] == 5
    assert stats["breaker"]["state"] == CLOSED  # the cloud is up: rejections do not open the breaker
    client.close()


class _Overloaded(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """A server that sheds every inference request."""

    def __init__(self) -> None:
        self.requests = 0

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        self.requests += 1
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        raise AssertionError("abort raises")


@pytest.fixture()
def overloaded() -> Iterator[tuple[_Overloaded, str]]:
    servicer = _Overloaded()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None).wait()


def test_an_overloaded_cloud_is_retried_with_backoff_then_answered_locally(  # type: ignore[no-untyped-def]
    bundle: Bundle, overloaded: tuple[_Overloaded, str], digits
) -> None:
    servicer, target = overloaded
    client = _client(bundle, target)
    retry = RetryPolicy(attempts=3, base_ms=10, jitter=0.5)
    breaker = CircuitBreaker(failures=100)
    runtime = _runtime(bundle, client, split=0, exits=False, retry=retry, breaker=breaker, deadline_ms=1000)
    answers = [runtime.infer(x) for x in digits.x_test[:4]]
    _assert_answered_locally(answers, deadline_ms=1000)
    assert {a.degraded for a in answers} == {"overloaded"}
    assert {a.source for a in answers} == {"edge"}  # time was left: the full model ran on the edge
    assert servicer.requests == 12 and runtime.stats()["retries"] == 8
    client.close()
