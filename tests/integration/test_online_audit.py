"""Online audits against a real cloud: a stream whose first exit starts disagreeing with the full model at a known
request makes that exit's threshold tighten within ``TIGHTEN_WITHIN`` requests, every request is answered, the
audits are counted; and audits to an unreachable cloud leave the answers' latency as it was.

The drift: clean test digits on which the first exit agrees with the full model, then, from request ``DRIFT_AT``,
noisy digits on which it is confident (at the threshold in force) and wrong, in the full model's eyes.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import statistics

import numpy as np
import pytest

from edge.audit import ControllerConfig
from edge.auditor import AuditConfig
from edge.client import CloudClient
from edge.metrics import render
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle

DRIFT_AT = 150
TIGHTEN_WITHIN = 100  # requests after DRIFT_AT: at a 20% audit rate the first audit comes after ~5 on average;
# the test waits for each request's audit before the next request (EdgeRuntime.flush_audits), so the evidence
# arrives in request order and the outcome does not depend on how busy the machine is
REQUESTS = 400


def _lenient(bundle: Bundle, x: np.ndarray) -> Bundle:
    """The bundle with exit0's threshold at the median of its scores on ``x``: half the samples exit there."""
    edge = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    session = edge.exit_session("exit0")
    segment = edge.segment_session(0)
    probs = []
    for s in x:
        h = segment.run(None, {segment.get_inputs()[0].name: s[None]})[0]
        logits = session.run(None, {session.get_inputs()[0].name: h})[0][0]
        p = np.exp(logits - logits.max())
        probs.append(float((p / p.sum()).max()))
    threshold = float(np.median(probs))
    manifest = bundle.manifest.with_thresholds({"exit0": threshold}, {})
    return dataclasses.replace(bundle, manifest=manifest)


def _streams(bundle: Bundle, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clean, drifted): clean samples where exit0 exits and agrees with the full model, or does not exit; noisy
    samples where exit0 exits and disagrees with it."""
    n = len(bundle.manifest.segments)
    hybrid, full = EdgeRuntime(bundle, split=n), EdgeRuntime(bundle, split=n, exits=False)
    rng = np.random.default_rng(0)
    noisy = np.concatenate([x + rng.normal(0, sigma, x.shape).astype(np.float32) for sigma in (1.0, 2.0, 3.0)])
    clean = [s for s in x if (a := hybrid.infer(s)).exit != "exit0" or a.label == full.infer(s).label]
    drifted = [s for s in noisy if (a := hybrid.infer(s)).exit == "exit0" and a.label != full.infer(s).label]
    assert len(clean) >= 50 and len(drifted) >= 10, (len(clean), len(drifted))
    return np.stack(clean), np.stack(drifted)


def test_a_drifting_exit_is_tightened_within_a_stated_number_of_requests(  # type: ignore[no-untyped-def]
    bundle: Bundle, cloud: str, digits, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = _lenient(bundle, digits.x_test)
    calibrated = bundle.manifest.exit("exit0").threshold
    clean, drifted = _streams(bundle, digits.x_test)
    m = bundle.manifest
    client = CloudClient(cloud, model=m.model, bundle_hash=m.content_hash)
    client.wait_ready(10)
    controller = ControllerConfig(every=5, hold=100, warmup=50)
    audit = AuditConfig(rate=0.2, max_rps=1000, adaptive=True, window=200, controller=controller)
    runtime = EdgeRuntime(bundle, cloud=client, audit=audit, rng=random.Random(0), deadline_ms=5000)
    caplog.set_level(logging.INFO, logger="edgesplit.edge.audit")
    answers, tightened_at = [], None
    for r in range(REQUESTS):
        sample = clean[r % len(clean)] if r < DRIFT_AT else drifted[r % len(drifted)]
        answers.append(runtime.infer(sample))
        runtime.flush_audits()  # the evidence in request order: the same stream tightens at the same request
        if tightened_at is None and runtime.thresholds["exit0"] > calibrated:
            tightened_at = r
    stats = runtime.stats()
    runtime.close()
    client.close()
    assert tightened_at is not None and DRIFT_AT <= tightened_at < DRIFT_AT + TIGHTEN_WITHIN, tightened_at
    # nothing lost: every request answered, none degraded
    assert len(answers) == stats["requests"] == REQUESTS and all(a.degraded is None for a in answers)
    # The drift goes on; the calibrated threshold lets every drifted sample go at exit0 (so they were chosen), the
    # tightened one fewer: each tightening is just above the disagreements audited so far, so it takes a few steps.
    late = answers[-100:]
    assert sum(a.exit == "exit0" for a in late) < 80, [a.source for a in late]
    assert m.exit("exit0").threshold == calibrated  # the manifest's threshold stays as calibrated
    a = runtime.stats()["audit"]
    assert a["completed"] >= 1 and a["sent"] == a["completed"] and a["bytes"] > 0
    assert a["selected"] == a["completed"] + sum(a["dropped"].values())
    assert a["exits"]["exit0"]["threshold"] > a["exits"]["exit0"]["calibrated"] == pytest.approx(calibrated)
    assert any("exit exit0 threshold tighten" in r.getMessage() for r in caplog.records)
    text = render(stats, m.model)
    assert 'edgesplit_edge_exit_threshold{model="' in text and "edgesplit_edge_audits_total" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_audits_to_an_unreachable_cloud_leave_answers_alone(bundle: Bundle, digits) -> None:  # type: ignore[no-untyped-def]
    """Edge-only route (no offload), every exited sample audited at a closed port: the answers' median latency
    stays within a generous factor of the audit-free runtime's on the same samples, interleaved."""
    bundle = _lenient(bundle, digits.x_test)
    m, n = bundle.manifest, len(bundle.manifest.segments)
    client = CloudClient(f"127.0.0.1:{_closed_port()}", model=m.model, bundle_hash=m.content_hash, timeout_s=0.5)
    audited = EdgeRuntime(bundle, split=n, cloud=client, audit=AuditConfig(rate=1.0, max_rps=200))
    plain = EdgeRuntime(bundle, split=n)
    times: dict[str, list[float]] = {"audited": [], "plain": []}
    labels = []
    for r in range(600):
        x = digits.x_test[r % len(digits.x_test)]
        order = (("audited", audited), ("plain", plain)) if r % 2 else (("plain", plain), ("audited", audited))
        pair = []
        for name, runtime in order:
            answer = runtime.infer(x)
            times[name].append(answer.latency_ms)
            pair.append(answer.label)
        labels.append(pair[0] == pair[1])
    stats = audited.stats()
    audited.close()
    client.close()
    assert all(labels)  # same answers
    ratio = statistics.median(times["audited"][100:]) / statistics.median(times["plain"][100:])
    assert ratio < 1.5, (ratio, statistics.median(times["plain"]))
    a = stats["audit"]
    assert a["completed"] == 0 and a["selected"] > 0
    assert a["dropped"]["unavailable"] + a["dropped"]["deadline"] > 0, a["dropped"]
    assert stats["breaker"] == {"state": "closed", "opened": 0}  # audit failures never feed the breaker
    assert a["exits"]["exit0"]["observations"] > 0  # the edge's own full-model answers are evidence too
