"""``edgesplit bench NAME``: each benchmark a subcommand with its own options (``edgesplit bench NAME --help``)."""

from __future__ import annotations

import argparse
import importlib

__all__ = ["BENCHMARKS", "add_arguments", "run"]

BENCHMARKS: dict[str, tuple[str, str]] = {
    "accuracy": ("benchmarks.accuracy", "accuracy vs. exits vs. bytes per family (--pretrained: the 224-px nets)"),
    "network": ("benchmarks.network", "latency and energy per strategy per network profile, through netsim"),
    "faults": ("benchmarks.faults", "the edge against a cloud that is killed, blackholed, reset, starved"),
    "cloud": ("benchmarks.cloud", "the cloud's throughput and p99 vs. clients, batching, malformed requests"),
    "edge": ("benchmarks.edge", "the edge's levers: fp32 vs. int8, ce vs. distilled exits, pruning, overhead"),
    "bottleneck": ("benchmarks.bottleneck", "learned bottlenecks at the split of the 224-px MobileNetV2 vs. JPEG"),
    "photos": ("benchmarks.photos", "the pretrained networks on real ImageNet photos, every split point"),
    "drift": ("benchmarks.drift", "static vs. adaptive exit thresholds on a corrupted stream (online audits)"),
    "text": ("benchmarks.text", "text on the edge: exits per layer, entropy vs. patience, edge vs. cloud vs. hybrid"),
}
"""Subcommand: (module with ``add_arguments(parser)`` and ``run(args) -> int``, one line of help)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per benchmark, each filled by its own module."""
    sub = parser.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    for name, (module_name, help_) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=help_, description=help_)
        module.add_arguments(child)
        child.set_defaults(bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return int(args.bench_run(args))
