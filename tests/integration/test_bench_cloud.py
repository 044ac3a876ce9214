"""The pieces of ``edgesplit bench cloud`` against a real server: every malformed request gets its status code and
the server keeps serving; the load generator's clients get answers."""

from __future__ import annotations

import os

import numpy as np

from benchmarks.load import requests_for, run_load
from benchmarks.malformed import cases_for, malformed_suite
from cloud.server import CloudConfig, CloudServer

TOKEN = "bench-token-0123456789abcdef"


def test_every_malformed_request_gets_its_status_and_the_server_keeps_serving(bundle) -> None:  # type: ignore[no-untyped-def]
    manifest = bundle.manifest
    spec = manifest.split_points[1]
    config = CloudConfig(bundles=(str(bundle.root),), port=0, threads=1, auth_tokens=(TOKEN,))
    server = CloudServer(config)
    port = server.start()
    try:
        cases = cases_for(manifest.model, spec.tensor.name, spec.tensor.sample_shape, spec.index, TOKEN)
        good = requests_for(
            np.zeros((1, *spec.tensor.sample_shape), np.float32), manifest.model, spec.tensor.name, spec.index
        )[0]
        report = malformed_suite(f"127.0.0.1:{port}", os.getpid(), cases, good, TOKEN, total=3 * len(cases))
    finally:
        server.stop(grace=1.0)
    wrong = {c["name"]: c["got"] for c in report["cases"] if c["got"] != {c["expected"]: 3}}  # type: ignore[index, union-attr]
    assert wrong == {}
    assert report["all_correct"] and report["server_alive"]
    assert len(cases) == 17


def test_the_load_generator_drives_closed_loop_clients(bundle, cloud, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = bundle.manifest.split_points[1]
    np.save(tmp_path / "x.npy", np.zeros((4, *spec.tensor.sample_shape), np.float32))
    result = run_load(
        cloud,
        tmp_path / "x.npy",
        bundle.manifest.model,
        spec.index,
        clients=3,
        seconds=0.5,
        warmup_s=0.2,
        input_name=spec.tensor.name,
    )
    assert result.clients == 3 and result.requests > 0 and result.errors == {}
    assert 0 < result.p50_ms <= result.p99_ms
