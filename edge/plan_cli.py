"""``edgesplit plan``: the expected latency of every configuration of a profiled bundle on a given network."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from edge.planner import Candidate, Network, best_accuracy_within, candidates, cost_model, plan
from protos.bundle import Bundle

__all__ = ["add_arguments", "parse_bandwidth", "run"]

_UNITS = {"": 1e6, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_BANDWIDTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]?bit)?(?:/s|ps)?\s*$", re.IGNORECASE)


class BandwidthError(argparse.ArgumentTypeError, ValueError):
    """A bandwidth that does not parse (argparse shows its message; elsewhere it is a ValueError)."""


def parse_bandwidth(text: str) -> float:
    """``"5.85mbit"``, ``"500kbit/s"``, ``"1gbps"`` or a plain number of Mbit/s -> bits per second."""
    match = _BANDWIDTH.match(text)
    if match is None or float(match[1]) <= 0:
        raise BandwidthError(
            f"bandwidth {text!r} is not a positive rate; write e.g. 5.85mbit, 500kbit/s, 1gbit or 18.9 (Mbit/s)"
        )
    return float(match[1]) * _UNITS[(match[2] or "").lower()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="a profiled bundle")
    parser.add_argument("--bandwidth", type=parse_bandwidth, required=True, help="uplink, e.g. 5.85mbit")
    parser.add_argument("--rtt", type=float, required=True, help="round-trip time, ms")
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument("--target-ms", type=float, default=None, help="instead: best accuracy within this latency")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every candidate as JSON")


def _row(c: Candidate, chosen: Candidate) -> str:
    mark = "*" if c == chosen else " "
    return (
        f"{mark} {c.split:>5} {c.codec:<10} {'on' if c.exits else 'off':>5} {c.latency_ms:>10.3f}"
        f" {100 * c.accuracy:>8.2f}% {100 * c.edge_exit_rate:>7.1f}% {100 * c.offload_rate:>8.1f}%"
    )


def run(args: argparse.Namespace) -> int:
    """Print every candidate, fastest first, and mark the plan."""
    costs = cost_model(Bundle.load(args.bundle).manifest)
    network = Network(args.bandwidth, args.rtt)
    if args.target_ms is not None:
        chosen = best_accuracy_within(costs, network, args.target_ms)
    else:
        chosen = plan(costs, network, args.budget / 100)
    listed = candidates(costs, network)
    print(f"network {args.bandwidth / 1e6:g} Mbit/s, rtt {args.rtt:g} ms; full model {100 * costs.accuracy_full:.2f}%")
    print(f"  {'split':>5} {'codec':<10} {'exits':>5} {'expect ms':>10} {'accuracy':>9} {'exited':>8} {'offload':>9}")
    for c in listed:
        print(_row(c, chosen))
    print(f"\nplan: {chosen.label}: {chosen.latency_ms:.3f} ms expected, {100 * chosen.accuracy:.2f}% accuracy")
    if args.json:
        args.json.write_text(
            json.dumps({"plan": chosen.__dict__, "candidates": [c.__dict__ for c in listed]}, indent=2)
        )
    return 0
