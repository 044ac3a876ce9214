"""The Prometheus text exposition format, served on a small HTTP endpoint (``GET /metrics``), stdlib only.

Shared by the edge's and the cloud's metrics: each renders its own families with :func:`family` and
:func:`histogram`, and serves them with :class:`MetricsServer`.

Example:
    >>> h = Histogram((1.0, 5.0)); h.observe(0.5); h.observe(3.0)
    >>> histogram("demo_ms", "A demo.", [({"model": "m"}, h)])[-3:]
    ['demo_ms_bucket{model="m",le="+Inf"} 2', 'demo_ms_sum{model="m"} 3.5', 'demo_ms_count{model="m"} 2']
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Histogram", "MetricsServer", "family", "histogram", "line"]

Labels = Mapping[str, object]


class Histogram:
    """Counts per bucket (by upper bound; ``+Inf`` implied), their sum and count. Not locked: callers hold one."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
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


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def line(name: str, labels: Labels, value: float) -> str:
    """One sample: ``name{k="v",...} value``."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


def family(name: str, kind: str, help_: str, rows: Iterable[tuple[Labels, float]]) -> list[str]:
    """A metric family: its HELP and TYPE lines, then one line per (labels, value)."""
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *(line(name, labels, v) for labels, v in rows)]


def histogram(name: str, help_: str, rows: Iterable[tuple[Labels, Histogram | Mapping[str, Any]]]) -> list[str]:
    """A histogram family; each row is a :class:`Histogram` or its :meth:`~Histogram.snapshot`."""
    out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for labels, hist in rows:
        snap = hist.snapshot() if isinstance(hist, Histogram) else hist
        out.extend(line(f"{name}_bucket", {**labels, "le": le}, n) for le, n in snap["buckets"].items())
        out.append(line(f"{name}_sum", labels, snap["sum"]))
        out.append(line(f"{name}_count", labels, snap["count"]))
    return out


class MetricsServer:
    """``GET /metrics`` on ``address`` (``host:port``; port 0 picks a free one), served from a daemon thread;
    ``render`` is called per scrape and returns the exposition text."""

    def __init__(self, render: Callable[[], str], address: str) -> None:
        host, _, port = address.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes are not news

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="edgesplit-metrics", daemon=True)

    def start(self) -> int:
        """Start serving; the bound port."""
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
