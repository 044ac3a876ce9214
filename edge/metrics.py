"""The edge's metrics in the Prometheus text format, on a small HTTP endpoint (``GET /metrics``), stdlib only.

What is exported comes from :meth:`edge.runtime.EdgeRuntime.stats`: requests, answers by source, exits taken,
fallbacks by reason, offload attempts, retries, racing wins, bytes sent, the circuit breaker's state, a latency
histogram (:class:`Histogram`, which the runtime's counters feed) and, with audits on (:mod:`edge.auditor`), per exit
the estimated agreement with the full model, the disagreement and its bound, the allowance, the threshold in force and
the calibrated one, and the audits by outcome, dropped by reason, and their bytes.

Example:
    >>> server = MetricsServer(runtime.stats, "127.0.0.1:9100"); port = server.start()   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from protos import exposition

__all__ = ["BUCKETS_MS", "Histogram", "MetricsServer", "render"]

BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
"""Upper bounds of the latency histogram's buckets, in ms (``+Inf`` is implied)."""

_PREFIX = "edgesplit_edge"


class Histogram(exposition.Histogram):
    """A latency histogram in ms with :data:`BUCKETS_MS` by default."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_MS) -> None:
        super().__init__(bounds)


def render(stats: Mapping[str, Any], model: str) -> str:
    """The Prometheus text exposition of ``stats`` (as :meth:`EdgeRuntime.stats` returns it)."""
    base = {"model": model}
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, rows: list[tuple[dict[str, object], float]]) -> None:
        out.extend(exposition.family(f"{_PREFIX}_{name}", kind, help_, [({**base, **k}, v) for k, v in rows]))

    metric("requests_total", "counter", "Requests answered.", [({}, stats["requests"])])
    metric("answers_total", "counter", "Answers by source.", [({"source": k}, v) for k, v in stats["answers"].items()])
    metric("exits_total", "counter", "Answers from each exit.", [({"exit": k}, v) for k, v in stats["exits"].items()])
    fallbacks = [({"reason": k}, v) for k, v in stats["fallbacks"].items()]
    metric("fallbacks_total", "counter", "Answered locally because the cloud failed, by reason.", fallbacks)
    metric("offload_attempts_total", "counter", "Requests sent to the cloud (tries).", [({}, stats["offloads"])])
    metric("retries_total", "counter", "Retried tries.", [({}, stats["retries"])])
    metric("race_local_wins_total", "counter", "Races the local model won.", [({}, stats["race_local_wins"])])
    metric("bytes_sent_total", "counter", "Tensor bytes sent to the cloud.", [({}, stats["bytes_sent"])])
    breaker = stats["breaker"]
    metric("breaker_state", "gauge", "1 for the breaker's current state.", [({"state": breaker["state"]}, 1)])
    metric("breaker_opened_total", "counter", "Times the breaker opened.", [({}, breaker["opened"])])
    if "audit" in stats:
        _audit(stats["audit"], metric)
    latency = stats.get("latency_ms")
    if latency:
        out.extend(exposition.histogram(f"{_PREFIX}_latency_ms", "Request latency, ms.", [(base, latency)]))
    return "\n".join(out) + "\n"


def _audit(
    audit: Mapping[str, Any], metric: Callable[[str, str, str, list[tuple[dict[str, object], float]]], None]
) -> None:
    """Audits and, per exit, the online estimate and the thresholds (:meth:`edge.auditor.Auditor.stats`)."""
    exits = audit["exits"].items()
    rows = {key: [({"exit": name}, e[key]) for name, e in exits if e[key] is not None]
            for key in ("agreement", "disagreement", "bound", "allowance", "threshold", "calibrated")}  # fmt: skip
    metric("exit_agreement", "gauge", "Estimated agreement with the full model of the samples an exit lets go.",
           rows["agreement"])  # fmt: skip
    metric("exit_disagreement", "gauge", "Estimated disagreements at an exit per request (window).",
           rows["disagreement"])  # fmt: skip
    metric("exit_disagreement_bound", "gauge", "The disagreement's one-sided bound per request.", rows["bound"])
    metric("exit_disagreement_allowance", "gauge", "The exit's share of the budget.", rows["allowance"])
    metric("exit_threshold", "gauge", "The exit threshold in force.", rows["threshold"])
    metric("exit_threshold_calibrated", "gauge", "The exit threshold calibrated offline.", rows["calibrated"])
    metric("audits_total", "counter", "Exited samples audited, by outcome.",
           [({"outcome": k}, audit[k]) for k in ("selected", "sent", "completed")])  # fmt: skip
    metric("audits_dropped_total", "counter", "Audits chosen but not answered, by reason.",
           [({"reason": k}, v) for k, v in audit["dropped"].items()])  # fmt: skip
    metric("audit_bytes_total", "counter", "Tensor bytes sent by audits.", [({}, audit["bytes"])])
    metric("threshold_changes_total", "counter", "Exit threshold changes.", [({}, audit["changes"])])


class MetricsServer(exposition.MetricsServer):
    """``GET /metrics`` on ``address`` (``host:port``; port 0 picks a free one) from ``stats()`` at each scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], address: str, model: str = "") -> None:
        super().__init__(lambda: render(stats(), model), address)
