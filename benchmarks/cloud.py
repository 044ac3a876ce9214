"""``edgesplit bench cloud``: the cloud's throughput and latency under 1 to 64 concurrent edges, batching on and
off, against bare ONNX Runtime; then a malformed-input suite against the same server.

Setup, all on this machine:
- The model: a VGG-style network trained on Fashion-MNIST (cached), served from the split point before its dense
  head (``--split``, default 2), the tail split computing sends to the cloud. ``--bundle`` measures another.
- The cloud: ``edgesplit cloud`` in a subprocess, one per batching mode, the same flags otherwise.
- The edges: closed-loop clients, each sending its next request when the last is answered, driven by one asyncio
  process (:mod:`benchmarks.load`) sending requests serialised once, so the clients cost as little CPU as possible on
  these shared cores. Each run is warmed up, then measured for ``--seconds``.
- The limit: the same tail in ONNX Runtime, in this process, at the server's ``max_batch_size``, same threads, no
  gRPC: the most any server could do here.

Writes ``DIR/results.json`` (``runs``, ``limit_rps``, ``malformed``) and ``DIR/cloud.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import LoadResult, run_load
from benchmarks.malformed import malformed_suite
from benchmarks.options import add_data_dir, add_out
from benchmarks.triton import TRITON_ROW, triton_run, triton_server, triton_summary
from cloud.process import CloudProcess
from protos.bundle import Bundle

__all__ = ["add_arguments", "bench_bundle", "run"]

CLIENTS = (1, 2, 4, 8, 16, 32, 64)
BENCH_MODEL = {"family": "vgg", "width": 1.0, "split_points": ("stage2", "stage3"), "exits": ("stage2",)}


def bench_bundle(cache: Path, data_dir: Path | None, epochs: int, out: Path | None = None) -> Bundle:
    """The benchmark's model: VGG-style on Fashion-MNIST, trained ``epochs`` (cached), exported to ``out`` (default:
    the cache)."""
    from split.data import load_fashion_mnist
    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, make_bundle
    from split.train import TrainConfig

    data = load_fashion_mnist(data_dir)
    model = ModelConfig(in_channels=1, image_size=28, **BENCH_MODEL)  # type: ignore[arg-type]
    train = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3)
    bundle, _ = make_bundle(data, model, train, BundleConfig(default_split=2), cache, out)
    return bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench cloud``."""
    add_out(parser)
    add_data_dir(parser)
    parser.add_argument("--cache-dir", type=Path, default=None, help="trained models (default: $EDGESPLIT_CACHE)")
    parser.add_argument("--split", type=int, default=None, help="the split point measured (default: the middle one)")
    parser.add_argument("--bundle", type=Path, default=None, help="measure this bundle instead of the VGG default")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="concurrent edges per run")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run (default: 4)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=0, help="the servers' batching delay (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--malformed", type=int, default=10_000, help="malformed requests sent (default: 10000)")
    parser.add_argument("--bench-epochs", type=int, default=1, help="training epochs of the default model")
    parser.add_argument(
        "--triton",
        action="store_true",
        help="also measure NVIDIA Triton (.venv-triton, `make install`) on the exported repository, same clients",
    )


def _tail_inputs(bundle: Bundle, split: int, data_dir: Path | None, n: int = 256) -> np.ndarray:
    """The tensor at ``split`` for ``n`` Fashion-MNIST test samples: the edge segments run in ONNX Runtime."""
    import onnxruntime as ort

    from split.data import load_fashion_mnist

    x = load_fashion_mnist(data_dir).x_test[:n].astype(np.float32)
    for segment in bundle.manifest.segments[:split]:
        session = ort.InferenceSession(str(bundle.file(segment.file)), providers=["CPUExecutionProvider"])
        x = session.run(None, {session.get_inputs()[0].name: x})[0]
    return np.ascontiguousarray(x, np.float32)


def _limit(bundle: Bundle, split: int, inputs: np.ndarray, batch: int, threads: int, seconds: float) -> float:
    """Samples per second of the bare tail in ONNX Runtime at ``batch``, the server's session options, no gRPC."""
    import onnxruntime as ort

    from cloud.model import session_options

    path = bundle.file(bundle.manifest.split_point(split).tails["fp32"])
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(np.resize(inputs, (batch, *inputs.shape[1:])))
    for _ in range(3):
        session.run(None, {name: x})
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: x})
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def _server_args(args: argparse.Namespace, batching: bool) -> list[str]:
    flags = ["--threads", str(args.threads), "--log-level", "WARNING", "--max-batch-size", str(args.max_batch_size)]
    flags += ["--max-queue-delay-us", str(args.max_queue_delay_us), "--metrics", "127.0.0.1:0"]
    return flags if batching else [*flags, "--no-batching"]


def _batches(cloud: CloudProcess) -> tuple[float, float]:
    """(samples, runs) the server's ONNX Runtime has done so far, from its metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{cloud.metrics_port}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()

    def total(prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))

    return total("edgesplit_cloud_batch_size_sum"), total("edgesplit_cloud_batch_size_count")


def _parity(target: str, bundle: Bundle, split: int, inputs: np.ndarray, threads: int) -> dict[str, Any]:
    """64 requests at once to the batching server vs. the bare tail one sample at a time: the largest difference."""
    import grpc
    import onnxruntime as ort

    from benchmarks.load import requests_for
    from cloud.model import session_options
    from protos import inference_pb2 as pb
    from protos.inference_pb2_grpc import GRPCInferenceServiceStub
    from protos.tensors import response_outputs

    spec = bundle.manifest.split_point(split)
    session = ort.InferenceSession(
        str(bundle.file(spec.tails["fp32"])), session_options(threads), providers=["CPUExecutionProvider"]
    )
    samples = inputs[:64]
    payloads = requests_for(samples, bundle.manifest.model, spec.tensor.name, split)
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        pending = [stub.ModelInfer.future(pb.ModelInferRequest.FromString(p), timeout=60) for p in payloads]
        served = np.concatenate([next(iter(response_outputs(f.result()).values())) for f in pending])
    alone = np.concatenate([session.run(None, {session.get_inputs()[0].name: s[None]})[0] for s in samples])
    return {
        "requests": len(samples),
        "max_abs_diff": float(np.abs(served - alone).max()),
        "argmax_equal": bool((served.argmax(1) == alone.argmax(1)).all()),
    }


def _measure(args: argparse.Namespace, bundle: Bundle, inputs_file: Path) -> list[dict[str, Any]]:
    """Every client count against both servers, side by side (off, then on, per count), and Triton with
    ``--triton``."""
    spec = bundle.manifest.split_point(args.split)
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        off = stack.enter_context(CloudProcess([bundle.root], _server_args(args, False), timeout_s=300))
        on = stack.enter_context(CloudProcess([bundle.root], _server_args(args, True), timeout_s=300))
        triton = stack.enter_context(triton_server(args, bundle, inputs_file.parent)) if args.triton else None
        for clients in args.clients:
            for batching, cloud in ((False, off), (True, on)):
                samples, batches = _batches(cloud)
                result = run_load(
                    cloud.target,
                    inputs_file,
                    bundle.manifest.model,
                    args.split,
                    clients,
                    args.seconds,
                    input_name=spec.tensor.name,
                )
                more_samples, more_batches = (a - b for a, b in zip(_batches(cloud), (samples, batches), strict=True))
                row = {"clients": clients, "batching": batching, **_rounded(result)}
                row["mean_batch_size"] = round(more_samples / more_batches, 1) if more_batches else None
                runs.append(row)
                print(_row(row), file=sys.stderr, flush=True)
            if triton is not None:
                result, mean_batch = triton_run(triton, bundle, args, inputs_file, clients)
                row = {"clients": clients, "batching": True, "server": TRITON_ROW, **_rounded(result)}
                runs.append({**row, "mean_batch_size": mean_batch})
                print(_row(runs[-1]), file=sys.stderr, flush=True)
    return runs


def _rounded(result: LoadResult) -> dict[str, Any]:
    return {
        "throughput_rps": round(result.throughput_rps, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "mean_ms": round(result.mean_ms, 3),
        "requests": result.requests,
        "errors": result.errors,
    }


def _row(row: dict[str, Any]) -> str:
    mode = "triton" if row.get("server") == TRITON_ROW else "on " if row["batching"] else "off"
    return (
        f"{row['clients']:>7} {mode:>8} {row['throughput_rps']:>10.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
        f" {sum(row['errors'].values()):>6} {row['mean_batch_size'] or 0:>6.1f}"
    )


def _malformed(args: argparse.Namespace, bundle: Bundle, inputs: np.ndarray, workdir: Path) -> dict[str, Any]:
    import secrets

    from benchmarks.load import requests_for
    from benchmarks.malformed import cases_for

    token = secrets.token_urlsafe(24)
    (workdir / "tokens").write_text(token + "\n")
    spec = bundle.manifest.split_point(args.split)
    cases = cases_for(bundle.manifest.model, spec.tensor.name, spec.tensor.sample_shape, args.split, token)
    good = requests_for(inputs[:1], bundle.manifest.model, spec.tensor.name, args.split)[0]
    flags = [*_server_args(args, True), "--auth-token-file", str(workdir / "tokens")]
    with CloudProcess([bundle.root], flags, timeout_s=300) as cloud:
        assert cloud.process is not None
        return malformed_suite(cloud.target, cloud.process.pid, cases, good, token, args.malformed)


def _summary(
    runs: list[dict[str, Any]], limit_rps: float, limit_at_mean: float | None, clients: int = 32
) -> dict[str, Any]:
    at = {r["batching"]: r for r in runs if r["clients"] == clients and r.get("server") != TRITON_ROW}
    if len(at) < 2:
        return {}
    on, off = at[True], at[False]
    return {
        "clients": clients,
        "throughput_on_over_off": round(on["throughput_rps"] / off["throughput_rps"], 2),
        "p99_on_ms": on["p99_ms"],
        "p99_off_ms": off["p99_ms"],
        "fraction_of_limit": round(on["throughput_rps"] / limit_rps, 3),
        "mean_batch_size": on["mean_batch_size"],
        "limit_rps_at_mean_batch": round(limit_at_mean, 1) if limit_at_mean else None,
        "fraction_of_limit_at_mean_batch": round(on["throughput_rps"] / limit_at_mean, 3) if limit_at_mean else None,
    }


def _plot(runs: list[dict[str, Any]], limit_rps: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for batching, style in ((True, "o-"), (False, "s--")):
        rows = [r for r in runs if r["batching"] == batching and r.get("server") != TRITON_ROW]
        label = "batching on" if batching else "batching off"
        left.plot([r["clients"] for r in rows], [r["throughput_rps"] for r in rows], style, label=label)
        right.plot([r["clients"] for r in rows], [r["p99_ms"] for r in rows], style, label=label)
    left.axhline(limit_rps, color="gray", linestyle=":", label="bare ONNX Runtime (limit)")
    for ax, ylabel in ((left, "requests / s"), (right, "p99 latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent edge clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("edgesplit cloud: throughput and tail latency")
    fig.tight_layout()
    path = out / "cloud.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write results.json and the plot."""
    import tempfile

    from split.pipeline import default_cache_dir

    started = time.perf_counter()
    if args.split is None:
        args.split = 2  # the VGG model's dense head
    bundle = Bundle.load(args.bundle) if args.bundle else None
    if bundle is None:
        print("bench cloud: training or loading the VGG-style model (cached)", file=sys.stderr, flush=True)
        bundle = bench_bundle(args.cache_dir or default_cache_dir(), args.data_dir, args.bench_epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        inputs = _tail_inputs(bundle, args.split, args.data_dir)
        np.save(workdir / "inputs.npy", inputs)
        limit_rps = _limit(bundle, args.split, inputs, args.max_batch_size, args.threads, args.seconds)
        limit_b1 = _limit(bundle, args.split, inputs, 1, args.threads, args.seconds)
        print(
            f"limit: {limit_rps:.1f} samples/s at batch {args.max_batch_size}, {limit_b1:.1f} at batch 1",
            file=sys.stderr,
        )
        print(
            f"{'clients':>7} {'batching':>8} {'rps':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'batch':>6}",
            file=sys.stderr,
        )
        runs = _measure(args, bundle, workdir / "inputs.npy")
        mean = next(
            (r["mean_batch_size"] for r in runs if r["clients"] == 32 and r["batching"] and "server" not in r), None
        )
        limit_at_mean = _limit(bundle, args.split, inputs, round(mean), args.threads, args.seconds) if mean else None
        with CloudProcess([bundle.root], _server_args(args, True), timeout_s=300) as cloud:
            parity = _parity(cloud.target, bundle, args.split, inputs, args.threads)
        malformed = _malformed(args, bundle, inputs, workdir)
    report = {
        "benchmark": "cloud",
        "model": {
            "name": bundle.manifest.model,
            "split": args.split,
            "tensor": list(bundle.manifest.split_point(args.split).tensor.shape),
        },
        "server": {
            "max_batch_size": args.max_batch_size,
            "max_queue_delay_us": args.max_queue_delay_us,
            "threads": args.threads,
        },
        "limit_rps": round(limit_rps, 1),
        "limit_batch_size": args.max_batch_size,
        "limit_batch1_rps": round(limit_b1, 1),
        "runs": runs,
        "at_32_clients": _summary(runs, limit_rps, limit_at_mean),
        "triton_at_32_clients": triton_summary(runs, limit_rps) if args.triton else None,
        "parity": parity,
        "malformed": malformed,
        "plots": [_plot(runs, limit_rps, args.out).name],
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "seconds": round(time.perf_counter() - started, 1),
        "command": "edgesplit bench cloud " + " ".join(sys.argv[3:]),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps({k: report[k] for k in ("limit_rps", "at_32_clients", "triton_at_32_clients", "parity")}, indent=2)
    )
    m = malformed
    print(
        f"malformed: {m['requests']} requests, correct status {100 * m['correct_status']:.2f}%,"
        f" server alive {m['server_alive']}, RSS growth {m['rss_growth_mb']} MB"
    )
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
