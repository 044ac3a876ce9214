"""``edgesplit demo``: the whole system on scikit-learn's digits, compared with edge-only and cloud-only runs.

Trains (cached) a MobileNetV2-style network with early exits, calibrates the exits, exports a bundle, starts
``edgesplit cloud`` in a subprocess on 127.0.0.1, and streams the test split through the edge runtime three
ways: the hybrid (exits + split), edge only (whole model on the device) and cloud only (raw input sent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud.process import CloudProcess
from edge.client import CloudClient
from edge.evaluate import RunStats, evaluate
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from protos.codecs import CODECS
from split.data import load_digits
from split.partition import ModelConfig
from split.pipeline import BundleConfig, default_cache_dir, make_bundle
from split.samples import as_array
from split.train import TrainConfig, predict

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--split", type=int, default=1, help="split point for the hybrid (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="the loss must be within budget with this one-sided confidence (0.5: point estimate; default %(default)s)",
    )
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--codec", default="fp32", choices=CODECS, help="wire codec of the hybrid's split tensor")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.5, help="width multiplier (default: %(default)s)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="trained models and bundles (default: $EDGESPLIT_CACHE or ~/.cache/edgesplit)",
    )


def _run(
    bundle: Bundle, target: str, x: np.ndarray, y: np.ndarray, split: int, exits: bool, codec: str = "fp32"
) -> RunStats:
    client = CloudClient(target, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    try:
        client.wait_ready()
        runtime = EdgeRuntime(bundle, split=split, cloud=client, exits=exits, codec=codec)
        stats, _ = evaluate(runtime, x, y)
        return stats
    finally:
        client.close()


def _table(results: dict[str, Any], hybrid: RunStats, base: dict[str, RunStats]) -> str:
    rows = [("hybrid", hybrid), ("edge only", base["edge_only"]), ("cloud only", base["cloud_only"])]
    head = f"{'':<12}{'accuracy':>9}{'p50 ms':>9}{'p95 ms':>9}{'offload':>9}{'bytes/offload':>15}"
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lines.append(
            f"{name:<12}{s.accuracy:>9.2%}{s.latency_ms['p50']:>9.3f}{s.latency_ms['p95']:>9.3f}"
            f"{s.offload_rate:>9.1%}{s.bytes_per_offload:>15.0f}"
        )
    lines.append(f"{'full model':<12}{results['accuracy_full']:>9.2%}   (PyTorch, same weights)")
    exits = ", ".join(f"{k} {v:.1%}" for k, v in hybrid.exit_rate.items())
    lines.append(f"exit rate: {exits}; offloaded {hybrid.offload_rate:.1%}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints the table, optionally writes JSON."""
    start = time.perf_counter()
    torch.set_num_threads(2)
    data = load_digits()
    model = ModelConfig(width=args.width)
    bundle, net = make_bundle(
        data,
        model,
        TrainConfig(epochs=args.epochs),
        BundleConfig(args.criterion, args.budget / 100, args.split, confidence=args.confidence),
        args.cache_dir or default_cache_dir(),
    )
    accuracy_full = float((predict(net, data.x_test)[0].argmax(-1) == data.y_test).mean())
    n_segments = len(bundle.manifest.segments)
    x_test = as_array(data.x_test)
    with CloudProcess([bundle.root]) as cloud:
        hybrid = _run(bundle, cloud.target, x_test, data.y_test, args.split, exits=True, codec=args.codec)
        base = {
            "edge_only": _run(bundle, cloud.target, x_test, data.y_test, n_segments, exits=False),
            "cloud_only": _run(bundle, cloud.target, x_test, data.y_test, 0, exits=False),
        }
    results = {
        "dataset": data.name,
        "n": hybrid.n,
        "model": bundle.manifest.model,
        "split": args.split,
        "codec": args.codec,
        "budget_points": args.budget,
        "confidence": args.confidence,
        "criterion": args.criterion,
        "accuracy_full": accuracy_full,
        "accuracy_hybrid": hybrid.accuracy,
        "exit_rate": hybrid.exit_rate,
        "offload_rate": hybrid.offload_rate,
        "bytes_per_offload": hybrid.bytes_per_offload,
        "latency_ms": hybrid.latency_ms,
        "baselines": {
            k: {
                "accuracy": s.accuracy,
                "latency_ms": s.latency_ms,
                "offload_rate": s.offload_rate,
                "bytes_per_offload": s.bytes_per_offload,
            }
            for k, s in base.items()
        },
        "bundle": str(bundle.root),
        "content_hash": bundle.manifest.content_hash,
    }
    print(
        f"\nedgesplit demo: {data.name}, {hybrid.n} test samples, {bundle.manifest.model}, split point "
        f"{args.split} of {n_segments}, codec {args.codec}, budget {args.budget} pt\n"
    )
    print(_table(results, hybrid, base))
    print(f"\nbundle: {bundle.root}\ntook {time.perf_counter() - start:.1f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
