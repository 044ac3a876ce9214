"""The audit sender (edge.auditor) against a stub cloud: weights from the effective audit rate, the breaker and the
cloud's retry hint obeyed, failures dropped and counted, and a clock passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from edge.auditor import AuditConfig, Auditor
from edge.breaker import CircuitBreaker
from edge.client import CloudReply
from edge.errors import CloudUnavailable
from protos.bundle import Exit, Manifest, Segment, SplitPoint, TensorSpec


def _manifest() -> Manifest:
    t = [TensorSpec(f"t{i}", (-1, 2)) for i in range(3)]
    segments = (Segment(0, "s0.onnx", t[0], t[1]), Segment(1, "s1.onnx", t[1], t[2]))
    exits = (Exit("exit0", 0, "e0.onnx", threshold=0.6, calibration={"budget": 0.02}),)
    points = (SplitPoint(0, "input", t[0], tails={"fp32": "a.onnx"}),
              SplitPoint(1, "b", t[1], tails={"fp32": "b.onnx"}), SplitPoint(2, "output", t[2]))  # fmt: skip
    return Manifest("m", "f", ("a", "b"), t[0], t[2], segments, exits, points, default_split=1)


class _Pending:
    bytes_sent = 8

    def __init__(self, outcome: Any) -> None:
        self._outcome = outcome

    def result(self) -> CloudReply:
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome  # type: ignore[no-any-return]


class _Cloud:
    """Answers each audit with the next outcome: a label (logits favouring it) or an exception."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes, self.sent = outcomes, []

    def send(self, split: int, wire: Any, timeout_s: float, codec: Any) -> _Pending:
        self.sent.append(split)
        o = self.outcomes.pop(0)
        logits = np.eye(2, dtype=np.float32)[[o]] if isinstance(o, int) else None
        return _Pending(CloudReply(logits, 8, 1.0, 0.5) if logits is not None else o)


@dataclass
class _Answer:
    label: int
    exit: str | None = "exit0"
    source: str = "exit"
    degraded: str | None = None


def _auditor(cloud: _Cloud, now: list[float], breaker: CircuitBreaker | None = None) -> Auditor:
    config = AuditConfig(rate=0.5, max_rps=100, window=100)
    return Auditor(_manifest(), cloud, breaker or CircuitBreaker(), config, lambda _: None, checked=1,  # type: ignore[arg-type]
                   clock=lambda: now[0], rng=random.Random(0))  # fmt: skip


def _exited(auditor: Auditor, n: int, label: int = 0) -> None:
    tensors = [np.zeros((1, 2), np.float32)] * 2
    for _ in range(n):
        auditor.record([(0.9, _Answer(label))], tensors, _Answer(label))
    auditor.flush()


def test_audited_samples_weigh_one_over_the_effective_audit_rate() -> None:
    now = [0.0]
    cloud = _Cloud([1, CloudUnavailable("down", "unavailable"), 0, 0] + [0] * 20)
    auditor = _auditor(cloud, now)
    _exited(auditor, 8)  # random.Random(0) picks 4 of 8 at rate 0.5
    stats = auditor.stats()
    auditor.close()
    assert cloud.sent == [1] * stats["sent"] and stats["sent"] == stats["selected"] >= 3
    assert stats["dropped"]["unavailable"] == 1 and stats["completed"] == stats["selected"] - 1
    _, keys, weights, disagree = auditor.evidence.window_of(0)
    # each completed audit weighs resolved / (rate x completed) as they stand when it comes: 1/(0.5 x 1/1), then
    # (the second failed) 3/(0.5 x 2), then 4/(0.5 x 3)
    assert stats["selected"] == 4 and weights.tolist() == pytest.approx([2.0, 3.0, 8 / 3])
    assert disagree.tolist() == [True] + [False] * (len(keys) - 1)  # the first audit's cloud said 1, the exit 0


def test_audits_skip_an_open_breaker_and_pause_for_the_clouds_hint() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1)
    cloud = _Cloud([CloudUnavailable("busy", "overloaded", retry_after_s=2.0), 0, 0, 0, 0])
    auditor = _auditor(cloud, now, breaker)
    _exited(auditor, 8)
    s = auditor.stats()
    assert s["dropped"]["overloaded"] == 1 and s["dropped"]["paused"] == s["selected"] - 1  # paused for 2 s
    assert breaker.state == "closed"  # audit failures never feed the breaker
    now[0] = 2.5
    _exited(auditor, 4)
    assert auditor.stats()["completed"] >= 1
    breaker.record_failure()  # the requests' own failures open it: audits stop
    before = auditor.stats()["selected"]
    _exited(auditor, 8)
    s = auditor.stats()
    auditor.close()
    assert s["dropped"]["breaker_open"] == s["selected"] - before > 0
