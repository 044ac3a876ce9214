"""Triton beside ``edgesplit cloud`` in ``edgesplit bench cloud --triton``: the same tail, the same clients.

The bundle's repository (``export --format triton``'s :func:`split.triton.write_repository`, with the bench's
``--max-batch-size`` and ``--max-queue-delay-us``) is served by a real Triton (:mod:`cloud.tritonserver`, from
``.venv-triton``; its onnxruntime backend is the python-backend stand-in, so each batch crosses the python
backend's shared memory). The load generator (:mod:`benchmarks.load`) sends the same serialised one-sample
requests to ``<model>_s<split>_fp32``; the mean batch size comes from Triton's own statistics (inference count
over execution count).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.load import LoadResult, run_load
from cloud.tritonserver import TritonServer
from protos.bundle import Bundle

__all__ = ["TRITON_ROW", "model_for", "triton_run", "triton_server", "triton_stats", "triton_summary"]

TRITON_ROW = "triton"
"""The ``server`` of a run against Triton (runs against ``edgesplit cloud`` have none: their ``batching`` says)."""


def model_for(bundle: Bundle, split: int) -> str:
    """The repository's model for the fp32 tail at ``split``."""
    return f"{bundle.manifest.model}_s{split}_fp32"


def triton_stats(server: TritonServer, model: str) -> tuple[int, int]:
    """(inference count, execution count) of ``model`` so far, from Triton's statistics (HTTP endpoint)."""
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats"
    with urllib.request.urlopen(url, timeout=10) as reply:
        (stats,) = json.load(reply)["model_stats"]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


@contextmanager
def triton_server(args: argparse.Namespace, bundle: Bundle, workdir: Path) -> Iterator[TritonServer]:
    """Triton on a repository of ``bundle``'s fp32 tail at ``args.split`` (the one model measured)."""
    from split.triton import TritonConfig, tail_models, write_repository

    repo = workdir / "triton-repo"
    config = TritonConfig(max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us)
    write_repository(bundle, repo, config)
    keep = model_for(bundle, args.split)
    for model in tail_models(bundle):
        if model.name != keep:
            shutil.rmtree(repo / model.name)
    with TritonServer(repo, threads=args.threads, timeout_s=300) as server:
        yield server


def triton_run(
    server: TritonServer, bundle: Bundle, args: argparse.Namespace, inputs_file: Path, clients: int
) -> tuple[LoadResult, float | None]:
    """One closed-loop run against Triton: the load result and the mean batch size Triton ran."""
    model = model_for(bundle, args.split)
    before = triton_stats(server, model)
    spec = bundle.manifest.split_point(args.split)
    result = run_load(
        server.grpc_target, inputs_file, model, args.split, clients, args.seconds, input_name=spec.tensor.name
    )
    after = triton_stats(server, model)
    samples, runs = after[0] - before[0], after[1] - before[1]
    return result, (round(samples / runs, 1) if runs else None)


def triton_summary(runs: list[dict[str, Any]], limit_rps: float, clients: int = 32) -> dict[str, Any]:
    """Triton at ``clients`` beside ``edgesplit cloud`` (batching on): throughput, p99, fraction of the limit."""
    at = {r.get("server", "edgesplit"): r for r in runs if r["clients"] == clients and r["batching"]}
    if TRITON_ROW not in at:
        return {}
    triton, ours = at[TRITON_ROW], at.get("edgesplit")
    summary = {
        "clients": clients,
        "triton_rps": triton["throughput_rps"],
        "triton_p99_ms": triton["p99_ms"],
        "triton_fraction_of_limit": round(triton["throughput_rps"] / limit_rps, 3),
        "triton_mean_batch_size": triton["mean_batch_size"],
    }
    if ours:
        summary |= {
            "edgesplit_rps": ours["throughput_rps"],
            "edgesplit_p99_ms": ours["p99_ms"],
            "edgesplit_fraction_of_limit": round(ours["throughput_rps"] / limit_rps, 3),
        }
    print(f"at {clients} clients: {json.dumps(summary)}", file=sys.stderr)
    return summary
