"""The edge's metrics in the Prometheus text format, on a small HTTP endpoint (``GET /metrics``), stdlib only.

What is exported comes from :meth:`edge.runtime.EdgeRuntime.stats`: requests, answers by source, exits taken,
fallbacks by reason, offload attempts, retries, racing wins, bytes sent, the circuit breaker's state, and a
latency histogram (:class:`Histogram`, which the runtime's counters feed).

Example:
    >>> server = MetricsServer(runtime.stats, "127.0.0.1:9100"); port = server.start()   # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["BUCKETS_MS", "Histogram", "MetricsServer", "render"]

BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
"""Upper bounds of the latency histogram's buckets, in ms (``+Inf`` is implied)."""

_PREFIX = "edgesplit_edge"


class Histogram:
    """Counts per bucket, their sum and count; not locked (the runtime's counters hold a lock around it)."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> dict[str, Any]:
        """``buckets`` (cumulative, by upper bound, ``+Inf`` last), ``count`` and ``sum``."""
        cumulative, running = {}, 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative[bound] = running
        return {"buckets": cumulative, "count": running, "sum": self.total}


def _line(name: str, labels: Mapping[str, object], value: float) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{_PREFIX}_{name}{{{inner}}} {value}"


def render(stats: Mapping[str, Any], model: str) -> str:
    """The Prometheus text exposition of ``stats`` (as :meth:`EdgeRuntime.stats` returns it)."""
    base = {"model": model}
    out = []

    def metric(name: str, kind: str, help_: str, rows: list[tuple[dict[str, object], float]]) -> None:
        out.extend([f"# HELP {_PREFIX}_{name} {help_}", f"# TYPE {_PREFIX}_{name} {kind}"])
        out.extend(_line(name, {**base, **labels}, value) for labels, value in rows)

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
    latency = stats.get("latency_ms")
    if latency:
        rows = [({"le": le}, n) for le, n in latency["buckets"].items()]
        out.extend([f"# HELP {_PREFIX}_latency_ms Request latency, ms.", f"# TYPE {_PREFIX}_latency_ms histogram"])
        out.extend(_line("latency_ms_bucket", {**base, **labels}, value) for labels, value in rows)
        out.append(_line("latency_ms_sum", base, latency["sum"]))
        out.append(_line("latency_ms_count", base, latency["count"]))
    return "\n".join(out) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``address`` (``host:port``; port 0 picks a free one), served from a daemon thread."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], address: str, model: str = "") -> None:
        host, _, port = address.rpartition(":")

        def render_now() -> bytes:
            return render(stats(), model).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render_now()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not news

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> int:
        """Start serving; the bound port."""
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
