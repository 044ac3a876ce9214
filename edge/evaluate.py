"""Stream a labelled set through an :class:`EdgeRuntime` and summarise what happened (torch-free)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.runtime import Answer
from protos.bundle import Manifest

__all__ = ["RunStats", "evaluate", "percentiles"]


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of a latency sample, in ms."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


@dataclass(frozen=True)
class RunStats:
    """Accuracy, where answers came from, bytes and latency of one pass over a set."""

    n: int
    accuracy: float
    exit_rate: dict[str, float]
    offload_rate: float
    bytes_per_offload: float
    latency_ms: dict[str, float]
    degraded_rate: dict[str, float] = field(default_factory=dict)  # answered locally because the cloud failed, by why

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class Answerer(Protocol):
    """What :func:`evaluate` drives: an :class:`EdgeRuntime` or anything wrapping one."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def split(self) -> int: ...

    def infer(self, x: Any) -> Answer: ...


def evaluate(runtime: Answerer, x: Any, y: np.ndarray, warmup: int = 10) -> tuple[RunStats, list[Answer]]:
    """Answer every sample of ``x`` (an array, or a list of encoded images) one by one (after ``warmup`` untimed
    calls); stats and the answers."""
    for sample in x[:warmup]:
        runtime.infer(sample)
    answers, latencies = [], []
    for sample in x:
        start = time.perf_counter()
        answers.append(runtime.infer(sample))
        latencies.append((time.perf_counter() - start) * 1e3)
    n = len(answers)
    exits = Counter(a.exit for a in answers if a.source == "exit" and a.degraded is None)
    degraded = Counter(a.degraded for a in answers if a.degraded is not None)
    offloads = [a for a in answers if a.source == "cloud"]
    stats = RunStats(
        n=n,
        accuracy=float(np.mean([a.label == int(t) for a, t in zip(answers, y, strict=True)])),
        exit_rate={e.name: exits.get(e.name, 0) / n for e in runtime.manifest.exits_before(runtime.split)},
        offload_rate=len(offloads) / n,
        bytes_per_offload=float(np.mean([a.bytes_sent for a in offloads])) if offloads else 0.0,
        latency_ms=percentiles(latencies),
        degraded_rate={reason: count / n for reason, count in sorted(degraded.items())},
    )
    return stats, answers
