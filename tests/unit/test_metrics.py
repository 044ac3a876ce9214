"""The edge's Prometheus metrics: histogram buckets by hand, the text format, the HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from edge.metrics import Histogram, MetricsServer, render


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram((1.0, 10.0))
    for v in (0.5, 1.0, 3.0, 10.0, 50.0):
        h.observe(v)
    assert h.snapshot() == {"buckets": {"1.0": 2, "10.0": 4, "+Inf": 5}, "count": 5, "sum": 64.5}


def _stats() -> dict[str, Any]:
    h = Histogram((1.0, 10.0))
    h.observe(3.0)
    return {
        "requests": 3,
        "answers": {"exit": 1, "edge": 1, "cloud": 1},
        "exits": {"exit0": 1},
        "fallbacks": {"deadline": 1, "breaker_open": 0},
        "offloads": 2,
        "retries": 1,
        "race_local_wins": 0,
        "bytes_sent": 2048,
        "breaker": {"state": "closed", "opened": 0},
        "latency_ms": h.snapshot(),
    }


def test_render_names_every_counter_with_its_labels() -> None:
    text = render(_stats(), "digits")
    lines = set(text.splitlines())
    assert 'edgesplit_edge_requests_total{model="digits"} 3' in lines
    assert 'edgesplit_edge_answers_total{model="digits",source="cloud"} 1' in lines
    assert 'edgesplit_edge_exits_total{model="digits",exit="exit0"} 1' in lines
    assert 'edgesplit_edge_fallbacks_total{model="digits",reason="deadline"} 1' in lines
    assert 'edgesplit_edge_bytes_sent_total{model="digits"} 2048' in lines
    assert 'edgesplit_edge_breaker_state{model="digits",state="closed"} 1' in lines
    assert 'edgesplit_edge_latency_ms_bucket{model="digits",le="10.0"} 1' in lines
    assert 'edgesplit_edge_latency_ms_count{model="digits"} 1' in lines
    assert "# TYPE edgesplit_edge_latency_ms histogram" in lines


def test_the_endpoint_serves_metrics_and_refuses_other_paths() -> None:
    server = MetricsServer(_stats, "127.0.0.1:0", "digits")
    port = server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200 and "text/plain" in response.headers["Content-Type"]
            assert 'edgesplit_edge_requests_total{model="digits"} 3' in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.stop()
