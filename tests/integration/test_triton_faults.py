"""Faults against a real Triton, as ``test_faults.py`` against ``edgesplit cloud``: Triton killed (SIGKILL) and
started again on the same ports, and a blackhole through netsim in front of it.

The edge (``TritonClient``, exits on, a deadline, the circuit breaker) sends paced requests; the fault starts after
a third of them and ends after two thirds (:func:`benchmarks.faults._drive`). No request is lost, the fault is
felt (answers degraded), the worst latency stays within the deadline plus a margin, and offloading resumes.
Triton here serves one model (the fp32 tail at the default split point), so a restart takes seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks.faults import FaultResult, _drive
from cloud.tritonserver import TritonServer
from edge.breaker import CircuitBreaker
from edge.runtime import EdgeRuntime
from edge.triton import TritonClient, model_name
from netsim import NetSim, Toxic
from protos.bundle import Bundle
from protos.codecs import Codec

pytestmark = pytest.mark.triton

DEADLINE_MS = 300.0
MARGIN_MS = 250.0  # a small shared machine
RECOVERY_S = 20.0  # a killed Triton takes seconds to start again (its python-backend stub imports onnxruntime)


@pytest.fixture()
def one_model_repo(bundle: Bundle, triton_repo: Path, tmp_path: Path) -> Path:
    name = model_name(bundle.manifest.model, bundle.manifest.default_split, Codec("fp32"))
    shutil.copytree(triton_repo / name, tmp_path / "repo" / name)
    return tmp_path / "repo"


def _edge(bundle: Bundle, target: str) -> tuple[TritonClient, EdgeRuntime]:
    m = bundle.manifest
    client = TritonClient(target, model=m.model, bundle_hash=m.content_hash, max_reconnect_backoff_ms=200)
    client.wait_ready(30)
    runtime = EdgeRuntime(bundle, cloud=client, codec="fp32", deadline_ms=DEADLINE_MS,
                          breaker=CircuitBreaker(3, cooldown_s=0.5))  # fmt: skip
    return client, runtime


def _check(result: FaultResult, client: TritonClient) -> None:
    assert result.requests == 45 and result.lost == 0
    assert result.degraded > 0, "the fault was not felt"
    assert result.max_ms <= DEADLINE_MS + MARGIN_MS
    assert result.recovery_s is not None and result.recovery_s <= RECOVERY_S
    assert not client.refused


def _samples(digits) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.ascontiguousarray(digits.x_test[:45].astype(np.float32))


def test_triton_killed_and_restarted(bundle: Bundle, one_model_repo: Path, triton_venv: Path, digits) -> None:  # type: ignore[no-untyped-def]
    servers = [TritonServer(one_model_repo, triton_venv)]
    servers[0].start()
    try:
        first = servers[0]

        def restart() -> None:
            servers.append(TritonServer(one_model_repo, triton_venv, grpc_port=first.grpc_port,
                                        http_port=first.http_port))  # fmt: skip
            servers[-1].start()

        client, runtime = _edge(bundle, first.grpc_target)
        actions: tuple[Callable[[], None], Callable[[], None]] = (first.kill, restart)
        result = _drive("triton_killed", runtime, _samples(digits), DEADLINE_MS, 0.01, *actions, RECOVERY_S)
        client.close()
    finally:
        for server in servers:
            server.stop()
    _check(result, client)


def test_a_blackhole_in_front_of_triton(bundle: Bundle, one_model_repo: Path, triton_venv: Path, digits) -> None:  # type: ignore[no-untyped-def]
    with TritonServer(one_model_repo, triton_venv) as triton, NetSim() as sim:
        target = sim.create_proxy("triton", triton.grpc_target)
        client, runtime = _edge(bundle, target)
        toxic = Toxic("timeout", "upstream", {"timeout": 0}, name="fault")
        result = _drive(
            "blackhole",
            runtime,
            _samples(digits),
            DEADLINE_MS,
            0.01,
            lambda: sim.add_toxic("triton", toxic),
            lambda: sim.remove_toxic("triton", "fault"),
            RECOVERY_S,
        )
        client.close()
    _check(result, client)
