"""``edgesplit plan``: the expected latency (and energy) of every configuration of a profiled bundle on a network.

``--objective energy`` plans for least mJ per inference within the accuracy budget; energy needs the device's
compute power (``--device NAME``, else the device the bundle was profiled for, or ``--compute-w``) and the link's
radio model (``--link 3g|4g|wifi``; a bare ``--bandwidth``/``--rtt`` has no link type, so the default is ``wifi``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from edge.devices import DEVICES, device
from edge.energy import LINK_TYPES, radio_model
from edge.planner import OBJECTIVES, Candidate, Energy, Network, best_accuracy_within, candidates, cost_model, plan
from netsim.profiles import PROFILES
from protos.bundle import Bundle, Manifest

__all__ = ["add_arguments", "energy_model", "parse_bandwidth", "resolve_network", "run"]

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
    parser.add_argument(
        "--network",
        choices=sorted(PROFILES),
        help="a named network (netsim's profiles: its uplink and RTT; the radio model of the same name)",
    )
    parser.add_argument("--bandwidth", type=parse_bandwidth, help="uplink, e.g. 5.85mbit (or give --network)")
    parser.add_argument("--rtt", type=float, help="round-trip time, ms (or give --network)")
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument("--target-ms", type=float, default=None, help="instead: best accuracy within this latency")
    parser.add_argument(
        "--objective", choices=OBJECTIVES, default="latency", help="least expected ms, or least mJ per inference"
    )
    parser.add_argument(
        "--device",
        metavar="NAME",
        help=f"the device whose compute power energy uses ({', '.join(DEVICES)}; default: the profiled one)",
    )
    parser.add_argument("--compute-w", type=float, help="the device's compute power in W (overrides --device's)")
    parser.add_argument(
        "--link",
        choices=LINK_TYPES,
        help="the radio energy model of the link (default: --network's, else wifi)",
    )
    parser.add_argument(
        "--radio-warm",
        action="store_true",
        help="the radio is kept up by a stream of requests: no ramp or tail energy per offload",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every candidate as JSON")


def _row(c: Candidate, chosen: Candidate) -> str:
    mark = "*" if c == chosen else " "
    energy = f" {c.energy_mj:>10.2f}" if c.energy_mj is not None else ""
    return (
        f"{mark} {c.split:>5} {c.codec:<10} {'on' if c.exits else 'off':>5} {c.latency_ms:>10.3f}"
        f" {100 * c.accuracy:>8.2f}% {100 * c.edge_exit_rate:>7.1f}% {100 * c.offload_rate:>8.1f}%{energy}"
    )


def energy_model(args: argparse.Namespace, manifest: Manifest) -> tuple[Energy | None, str]:
    """The energy model the options give (``None`` when none can be had and none is needed) and its label."""
    name = args.device or (manifest.profile or {}).get("device", {}).get("name")
    watts = args.compute_w if args.compute_w is not None else (device(name).compute_w if name else None)
    if watts is None:
        if args.objective == "energy" or args.device:
            why = f"device {name!r} has no published compute power" if name else "no device is named"
            raise ValueError(f"energy needs the device's compute power: {why}; give --compute-w WATTS")
        return None, ""
    radio = radio_model(args.link, args.bandwidth, warm=args.radio_warm)
    label = f"; energy: {name or 'device'} {watts:g} W, {args.link} radio{' (warm)' if args.radio_warm else ''}"
    return Energy(watts, radio), label


def resolve_network(args: argparse.Namespace) -> None:
    """Fill ``--bandwidth``, ``--rtt`` (and ``--link``) from ``--network``; without it both must be given."""
    if args.network is not None:
        if args.bandwidth is not None or args.rtt is not None:
            raise ValueError("give --network NAME or --bandwidth and --rtt, not both")
        profile = PROFILES[args.network]
        args.bandwidth, args.rtt = profile.bandwidth_mbit * 1e6, profile.rtt_ms
        args.link = args.link or (args.network if args.network in LINK_TYPES else None)
    elif args.bandwidth is None or args.rtt is None:
        raise ValueError(f"give the network: --network ({', '.join(sorted(PROFILES))}) or --bandwidth and --rtt")
    args.link = args.link or "wifi"


def run(args: argparse.Namespace) -> int:
    """Print every candidate, fastest first, and mark the plan."""
    resolve_network(args)
    manifest = Bundle.load(args.bundle).manifest
    costs = cost_model(manifest)
    network = Network(args.bandwidth, args.rtt)
    energy, label = energy_model(args, manifest)
    if args.target_ms is not None:
        chosen = best_accuracy_within(costs, network, args.target_ms)
    else:
        chosen = plan(costs, network, args.budget / 100, objective=args.objective, energy=energy)
    listed = candidates(costs, network, energy)
    print(
        f"network {args.bandwidth / 1e6:g} Mbit/s, rtt {args.rtt:g} ms; full model {100 * costs.accuracy_full:.2f}%"
        f"{label}; objective {args.objective}"
    )
    head = f"  {'split':>5} {'codec':<10} {'exits':>5} {'expect ms':>10} {'accuracy':>9} {'exited':>8} {'offload':>9}"
    print(head + (f" {'mJ/inf':>10}" if energy else ""))
    for c in listed:
        print(_row(c, chosen))
    mj = f", {chosen.energy_mj:.2f} mJ per inference" if chosen.energy_mj is not None else ""
    print(f"\nplan: {chosen.label}: {chosen.latency_ms:.3f} ms expected{mj}, {100 * chosen.accuracy:.2f}% accuracy")
    if args.json:
        args.json.write_text(
            json.dumps({"plan": chosen.__dict__, "candidates": [c.__dict__ for c in listed]}, indent=2)
        )
    return 0
