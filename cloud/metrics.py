"""The cloud's metrics, per model and version, in the Prometheus text format (served by
:class:`protos.exposition.MetricsServer` at ``--metrics HOST:PORT``).

- ``edgesplit_cloud_requests_total{method,model,version,code}``: RPCs by outcome.
- ``edgesplit_cloud_request_latency_ms{method,model,version}``: time in the server, histogram.
- ``edgesplit_cloud_batch_size{model,version}``: samples per ONNX Runtime run, histogram.
- ``edgesplit_cloud_batch_latency_ms{model,version}``: ONNX Runtime time per run, histogram.
- ``edgesplit_cloud_queue_depth{model,version}``: samples waiting to be batched, now.
- ``edgesplit_cloud_model_loaded{model,version,hash}``: 1 per loaded version.

Requests for models that are not served count under ``model=""`` so that bad names cannot grow the label set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cloud.model import TailModel
from protos import exposition

__all__ = ["BATCH_BUCKETS", "LATENCY_BUCKETS_MS", "CloudMetrics"]

LATENCY_BUCKETS_MS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0)

_P = "edgesplit_cloud"


class CloudMetrics:
    """Counters and histograms the server's interceptor and batchers feed (one lock, a few dict updates each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str], exposition.Histogram] = {}
        self._batch_size: dict[tuple[str, str], exposition.Histogram] = {}
        self._batch_ms: dict[tuple[str, str], exposition.Histogram] = {}

    def observe_request(self, method: str, model: str, version: str, code: str, seconds: float) -> None:
        """One RPC finished with status ``code`` (``OK``, ``INVALID_ARGUMENT``, ...) after ``seconds``."""
        with self._lock:
            key = (method, model, version, code)
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._latency.get(key[:3])
            if hist is None:
                hist = self._latency[key[:3]] = exposition.Histogram(LATENCY_BUCKETS_MS)
            hist.observe(seconds * 1e3)

    def observe_batch(self, model: str, version: str, samples: int, seconds: float) -> None:
        """One ONNX Runtime run of ``samples`` samples took ``seconds``."""
        with self._lock:
            size = self._batch_size.get((model, version))
            if size is None:
                size = self._batch_size[model, version] = exposition.Histogram(BATCH_BUCKETS)
                self._batch_ms[model, version] = exposition.Histogram(LATENCY_BUCKETS_MS)
            size.observe(samples)
            self._batch_ms[model, version].observe(seconds * 1e3)

    def requests(self) -> dict[tuple[str, str, str, str], int]:
        """Request counts by (method, model, version, code)."""
        with self._lock:
            return dict(self._requests)

    def render(self, models: Iterable[TailModel] = ()) -> str:
        """The exposition text; ``models`` are the loaded versions (for the queue-depth and loaded gauges)."""
        with self._lock:
            requests = [(_labels(("method", "model", "version", "code"), k), v) for k, v in self._requests.items()]
            latency = [(_labels(("method", "model", "version"), k), h.snapshot()) for k, h in self._latency.items()]
            sizes = [(_labels(("model", "version"), k), h.snapshot()) for k, h in self._batch_size.items()]
            batch_ms = [(_labels(("model", "version"), k), h.snapshot()) for k, h in self._batch_ms.items()]
        models = list(models)
        depth = [({"model": m.name, "version": m.version}, m.queue_depth) for m in models]
        loaded = [({"model": m.name, "version": m.version, "hash": m.content_hash}, 1) for m in models]
        out = [
            *exposition.family(
                f"{_P}_requests_total", "counter", "RPCs by method, model, version and status.", requests
            ),
            *exposition.histogram(f"{_P}_request_latency_ms", "Time in the server per RPC, ms.", latency),
            *exposition.histogram(f"{_P}_batch_size", "Samples per ONNX Runtime run.", sizes),
            *exposition.histogram(f"{_P}_batch_latency_ms", "ONNX Runtime time per run, ms.", batch_ms),
            *exposition.family(f"{_P}_queue_depth", "gauge", "Samples waiting to be batched.", depth),
            *exposition.family(f"{_P}_model_loaded", "gauge", "1 per loaded model version.", loaded),
        ]
        return "\n".join(out) + "\n"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, object]:
    return dict(zip(names, values, strict=True))
