"""``edgesplit bench faults``: the edge against a real cloud that fails, through netsim or a killed process.

The demo's digits bundle, a cloud server in a subprocess, a netsim proxy in front of it (in-process), and an edge
runtime (split 1, exits on, a deadline) sending paced requests. Each fault starts after a third of the requests
and ends after two thirds:

* ``cloud_killed`` — the cloud process is killed (SIGKILL) and a new one started, on the same port;
* ``blackhole`` — netsim drops everything upstream (Toxiproxy's ``timeout`` with 0: never closes);
* ``reset`` — netsim resets every connection as data arrives (``reset_peer``);
* ``bandwidth_collapse`` — the uplink falls to 2 KB/s;
* ``overloaded`` — the cloud is replaced, on its port, by a server that is up and ready but sheds every inference
  with ``RESOURCE_EXHAUSTED`` and a retry hint in trailing metadata, as an overloaded server does.

Per fault: requests, lost (no answer: an exception reached the caller), degraded (answered locally because the
cloud failed), p99 and worst latency against the deadline, and recovery: seconds from the fault's end to the
first answer from the cloud again.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.options import add_out
from cloud.process import CloudProcess
from edge.breaker import CircuitBreaker
from edge.client import CloudClient
from edge.runtime import EdgeRuntime
from netsim import NetSim, Toxic
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.bundle import Bundle

__all__ = ["FAULTS", "FaultResult", "add_arguments", "run", "run_faults"]

FAULTS = ("cloud_killed", "blackhole", "reset", "bandwidth_collapse", "overloaded")


@dataclass(frozen=True)
class FaultResult:
    """One fault's outcome, as ``results.json`` lists it."""

    fault: str
    requests: int
    lost: int
    degraded: int
    p99_ms: float
    deadline_ms: float
    recovery_s: float | None
    max_ms: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cloud:
    """A cloud process on a fixed port, that can be killed and started again."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle, self.port = bundle, _free_port()
        self.process: CloudProcess | None = None

    def start(self) -> None:
        # the later --port wins over CloudProcess's own "--port 0": a restart comes back where the proxy points
        self.process = CloudProcess([self.bundle.root], extra_args=["--port", str(self.port)])
        self.process.start()

    def kill(self) -> None:
        if self.process and self.process.process:
            self.process.process.kill()  # no drain, no goodbye: as a crash
            self.process.stop()

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class _Shedder(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """Up and ready, but every inference is shed."""

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        context.set_trailing_metadata(((params.RETRY_AFTER_MS, "200"),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded: queue full, retry later")
        raise AssertionError("abort raises")  # for the type checker: abort never returns


def _overload(cloud: _Cloud) -> tuple[Callable[[], None], Callable[[], None]]:
    shedder = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Shedder(), shedder)

    def start() -> None:
        cloud.kill()
        shedder.add_insecure_port(f"127.0.0.1:{cloud.port}")
        shedder.start()

    def end() -> None:
        shedder.stop(0).wait()
        cloud.start()

    return start, end


def _fault_actions(fault: str, sim: NetSim, cloud: _Cloud) -> tuple[Callable[[], None], Callable[[], None]]:
    """(start, end) of ``fault``."""
    if fault == "cloud_killed":
        return cloud.kill, cloud.start
    if fault == "overloaded":
        return _overload(cloud)
    toxic = {
        "blackhole": Toxic("timeout", "upstream", {"timeout": 0}, name="fault"),
        "reset": Toxic("reset_peer", "upstream", {"timeout": 0}, name="fault"),
        "bandwidth_collapse": Toxic("bandwidth", "upstream", {"rate": 2}, name="fault"),
    }[fault]

    def start() -> None:
        sim.add_toxic("cloud", toxic)

    def end() -> None:
        sim.remove_toxic("cloud", "fault")

    return start, end


def run_fault(
    fault: str, bundle: Bundle, samples: np.ndarray, deadline_ms: float, pace_s: float, recovery_s: float = 20.0
) -> FaultResult:
    """Run one fault end to end (fresh cloud, proxy and edge) and measure it."""
    cloud = _Cloud(bundle)
    cloud.start()
    try:
        with NetSim() as sim:
            target = sim.create_proxy("cloud", f"127.0.0.1:{cloud.port}")
            m = bundle.manifest
            client = CloudClient(target, model=m.model, bundle_hash=m.content_hash, max_reconnect_backoff_ms=200)
            client.wait_ready(10)
            runtime = EdgeRuntime(
                bundle, split=1, cloud=client, deadline_ms=deadline_ms, breaker=CircuitBreaker(3, cooldown_s=0.5)
            )
            start_fault, end_fault = _fault_actions(fault, sim, cloud)
            result = _drive(fault, runtime, samples, deadline_ms, pace_s, start_fault, end_fault, recovery_s)
            client.close()
            return result
    finally:
        cloud.stop()


def _drive(
    fault: str,
    runtime: EdgeRuntime,
    samples: np.ndarray,
    deadline_ms: float,
    pace_s: float,
    start_fault: Callable[[], None],
    end_fault: Callable[[], None],
    recovery_s: float,
) -> FaultResult:
    n = len(samples)
    latencies, lost, degraded, ended_at, recovered = [], 0, 0, 0.0, None
    for i in range(n):
        if i == n // 3:
            start_fault()
        if i == 2 * n // 3:
            end_fault()
            ended_at = time.monotonic()
        begin = time.perf_counter()
        try:
            answer = runtime.infer(samples[i])
        except Exception:
            lost += 1
            continue
        finally:
            latencies.append((time.perf_counter() - begin) * 1e3)
        degraded += answer.degraded is not None
        if ended_at and recovered is None and answer.source == "cloud":
            recovered = time.monotonic() - ended_at
        time.sleep(pace_s)
    i = 0
    while recovered is None and ended_at and time.monotonic() - ended_at < recovery_s:  # keep asking until back
        if runtime.infer(samples[i % n]).source == "cloud":
            recovered = time.monotonic() - ended_at
        i += 1
        time.sleep(pace_s)
    p99, worst = float(np.percentile(latencies, 99)), float(np.max(latencies))
    return FaultResult(fault, n, lost, degraded, p99, deadline_ms, recovered, worst)


def run_faults(
    bundle: Bundle,
    samples: np.ndarray,
    faults: tuple[str, ...] = FAULTS,
    deadline_ms: float = 300.0,
    pace_s: float = 0.01,
) -> list[FaultResult]:
    """Every fault in turn; samples that never exit (they go to the cloud) make the faults show."""
    return [run_fault(f, bundle, samples, deadline_ms, pace_s) for f in faults]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench faults``."""
    add_out(parser)
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models (default: $EDGESPLIT_CACHE)")
    group = parser
    group.add_argument("--requests", type=int, default=300, help="requests per fault")
    group.add_argument("--deadline-ms", type=float, default=300.0, help="the edge's per-request deadline")


def run(args: argparse.Namespace) -> int:
    """Run every fault; print the table; write results.json."""
    from split.data import load_digits
    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, default_cache_dir, make_bundle
    from split.samples import as_array
    from split.train import TrainConfig

    started = time.perf_counter()
    data = load_digits()
    bundle, _ = make_bundle(data, ModelConfig(), TrainConfig(), BundleConfig(), args.cache_dir or default_cache_dir())
    samples = np.resize(as_array(data.x_test), (args.requests, *data.x_test.shape[1:]))
    results = run_faults(bundle, samples, deadline_ms=args.deadline_ms)
    report: dict[str, Any] = {
        "benchmark": "faults",
        "faults": [asdict(r) for r in results],
        "seconds": time.perf_counter() - started,
        "command": f"edgesplit bench faults --out {args.out}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    head = f"{'fault':<20} {'requests':>8} {'lost':>5} {'degraded':>8} {'p99 ms':>8} {'deadline':>8}"
    print(f"{head} {'recovery s':>10} {'max ms':>8}")
    for r in results:
        rec = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "never"
        row = f"{r.fault:<20} {r.requests:>8} {r.lost:>5} {r.degraded:>8} {r.p99_ms:>8.1f} {r.deadline_ms:>8.0f}"
        print(f"{row} {rec:>10} {r.max_ms:>8.1f}")
    print(f"wrote {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0
