"""``edgesplit demo``: the whole system on scikit-learn's digits, on a device that exists, over a real network.

Trains (cached) a MobileNetV2-style network with early exits, calibrates the exits, exports a bundle and profiles
it as a named device (:mod:`edge.devices`; default: the microcontroller of MLPerf Tiny's reference submission, the
class of device an 8x8 sensor image lives on). Starts ``edgesplit cloud`` in a subprocess on 127.0.0.1 behind a
netsim proxy shaped as a named network profile (default 3G), and answers the same test samples four ways,
interleaved sample by sample: the hybrid (exits + a split), edge only (the whole model on the device), cloud only
(the raw input sent) and the planner's route for this device and network. Each gets accuracy, latency p50/p95,
offload rate, bytes and energy per inference (the device's compute power x its measured compute + the radio's
per-byte energy, radio kept up by the stream), and one sentence says why the winner wins.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud.process import CloudProcess
from edge.client import CloudClient
from edge.devices import DEVICES, device
from edge.energy import RadioModel, answer_energy_mj, link_type_of, radio_model
from edge.evaluate import percentiles
from edge.planner import Candidate, Network, candidates, cost_model, plan
from edge.runtime import Answer, EdgeRuntime
from netsim import NetSim
from netsim.profiles import PROFILES, Profile, parse_profile
from protos.bundle import Bundle
from protos.codecs import CODECS
from split.data import load_digits
from split.partition import ModelConfig
from split.pipeline import BundleConfig, default_cache_dir, make_bundle
from split.profile import profile_bundle
from split.samples import as_array
from split.train import TrainConfig, predict

__all__ = ["add_arguments", "run"]

ROUTES = ("hybrid", "edge_only", "cloud_only", "planned")
_NAMES = {"hybrid": "hybrid", "edge_only": "edge only", "cloud_only": "cloud only", "planned": "planned"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--device",
        default="cortex-m4",
        help=f"the emulated edge device: {', '.join(DEVICES)} (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        default="3g",
        help=f"the network through netsim: {', '.join(PROFILES)} or BANDWIDTH/RTT[/JITTER] (default %(default)s)",
    )
    parser.add_argument("--samples", type=int, default=80, help="test samples per route (default %(default)s)")
    parser.add_argument(
        "--split", type=int, default=None, help="the hybrid's split point (default: the planner's best with exits)"
    )
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="the loss must be within budget with this one-sided confidence (0.5: point estimate; default %(default)s)",
    )
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--codec", default=None, choices=CODECS, help="the hybrid's wire codec (default: planned)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.5, help="width multiplier (default: %(default)s)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="trained models and bundles (default: $EDGESPLIT_CACHE or ~/.cache/edgesplit)",
    )


@dataclass
class _Route:
    """One route's answers, as measured."""

    candidate: Candidate
    latencies: list[float] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    energy_mj: list[float] = field(default_factory=list)

    def summary(self, y: np.ndarray, exits: list[str]) -> dict[str, Any]:
        n = len(self.answers)
        offloads = [a for a in self.answers if a.source == "cloud"]
        return {
            "config": self.candidate.label,
            "split": self.candidate.split,
            "codec": self.candidate.codec,
            "exits": self.candidate.exits,
            "accuracy": float(np.mean([a.label == int(t) for a, t in zip(self.answers, y, strict=True)])),
            "latency_ms": percentiles(self.latencies),
            "offload_rate": len(offloads) / n,
            "bytes_per_offload": float(np.mean([a.bytes_sent for a in offloads])) if offloads else 0.0,
            "exit_rate": {e: sum(a.source == "exit" and a.exit == e for a in self.answers) / n for e in exits},
            "energy_mj": float(np.mean(self.energy_mj)),
            "expected_ms": self.candidate.latency_ms,
        }


def _hybrid(listed: list[Candidate], n: int, split: int | None, codec: str | None) -> Candidate:
    """``--split``/``--codec`` with exits, or the fastest route that keeps exits on the device and offloads."""
    hybrids = [c for c in listed if c.exits and 0 < c.split < n and (split is None or c.split == split)]
    if codec is not None:
        hybrids = [c for c in hybrids if c.codec == codec]
    if not hybrids:
        raise ValueError(f"no hybrid route (exits before a split) at split {split}, codec {codec}")
    return hybrids[0]  # candidates come fastest first


def _why(routes: dict[str, dict[str, Any]], network: Profile, rtt_ms: float, device_name: str) -> str:
    """One sentence, from the measured figures, on why the planned route does as it does against the best single
    route (edge only or cloud only) here."""
    r, edge, cloud = routes["planned"], routes["edge_only"], routes["cloud_only"]
    single = min(("edge_only", "cloud_only"), key=lambda k: routes[k]["latency_ms"]["mean"])
    mean, best = r["latency_ms"]["mean"], routes[single]["latency_ms"]["mean"]
    verdict = "beats" if mean < best else "matches" if mean <= 1.02 * best else "trails"
    head = f"The planned route ({r['config']}, {mean:.0f} ms mean) {verdict} {_NAMES[single]} ({best:.0f} ms) here"
    full_ms, trip = edge["latency_ms"]["mean"], f"a {network.name} round trip ({rtt_ms:.0f} ms measured)"
    if r["exits"] and r["offload_rate"] < 1:
        rest = r["offload_rate"]
        where = "on the device" if rest == 0 else f"on the device and offload the other {rest:.0%}"
        return (
            f"{head} because its exits answer {1 - rest:.0%} of the digits {where}: they cost a fraction of the"
            f" {full_ms:.0f} ms the {device_name} needs for the whole model, and each offload pays {trip}."
        )
    if r["offload_rate"] == 1:
        return (
            f"{head} because {trip} costs less than the {full_ms:.0f} ms the {device_name} needs for the whole"
            f" model, and its codec sends {r['bytes_per_offload']:.0f} bytes where the raw input takes"
            f" {cloud['bytes_per_offload']:.0f}."
        )
    return f"{head} because {trip} costs more than the {device_name} needs for the whole model ({full_ms:.0f} ms)."


def _table(results: dict[str, Any]) -> str:
    head = (
        f"{'':<11}{'accuracy':>9}{'mean ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'offload':>9}{'bytes/offload':>15}"
        f"{'mJ/inf':>9}  route"
    )
    lines = [head, "-" * (len(head) + 24)]
    for name in ROUTES:
        r = results["routes"][name]
        lines.append(
            f"{_NAMES[name]:<11}{r['accuracy']:>9.2%}{r['latency_ms']['mean']:>9.1f}{r['latency_ms']['p50']:>9.1f}"
            f"{r['latency_ms']['p95']:>9.1f}"
            f"{r['offload_rate']:>9.1%}{r['bytes_per_offload']:>15.0f}{r['energy_mj']:>9.2f}  {r['config']}"
        )
    lines.append(f"{'full model':<11}{results['accuracy_full']:>9.2%}   (PyTorch, same weights)")
    hybrid = results["routes"]["hybrid"]
    exits = ", ".join(f"{k} {v:.1%}" for k, v in hybrid["exit_rate"].items())
    lines.append(f"hybrid exit rate: {exits}; offloaded {hybrid['offload_rate']:.1%}")
    lines.append("")
    lines.append(results["why"])
    return "\n".join(lines)


def _measure(
    runtime: EdgeRuntime, routes: dict[str, _Route], x: np.ndarray, energy: tuple[float, RadioModel, float]
) -> None:
    """Every sample through every route, interleaved (machine drift weighs on all alike); 3 warm-ups each."""
    compute_w, radio, reply_bytes = energy
    for route in routes.values():
        c = route.candidate
        runtime.set_route(c.split, c.codec if c.codec != "-" else "fp32", c.exits)
        for sample in x[:3]:
            runtime.infer(sample)
    for sample in x:
        for route in routes.values():
            c = route.candidate
            runtime.set_route(c.split, c.codec if c.codec != "-" else "fp32", c.exits)
            start = time.perf_counter()
            answer = runtime.infer(sample)
            ms = (time.perf_counter() - start) * 1e3
            route.latencies.append(ms)
            route.answers.append(answer)
            route.energy_mj.append(answer_energy_mj(answer, ms, compute_w, radio, reply_bytes))


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints the table, optionally writes JSON."""
    start = time.perf_counter()
    profile = parse_profile(args.profile)  # a bad name fails before training
    dev = device(args.device)
    torch.set_num_threads(2)
    data = load_digits()
    bundle, net = make_bundle(
        data,
        ModelConfig(width=args.width),
        TrainConfig(epochs=args.epochs),
        BundleConfig(args.criterion, args.budget / 100, 1, confidence=args.confidence),
        args.cache_dir or default_cache_dir(),
    )
    x_test, y_test = as_array(data.x_test)[: args.samples], data.y_test[: args.samples]
    accuracy_full = float((predict(net, x_test)[0].argmax(-1) == y_test).mean())  # the same samples
    torch.set_num_threads(1)
    profile_bundle(bundle, data.x_cal, data.y_cal, runs=10, device_name=dev.name)
    bundle = Bundle.load(bundle.root)
    m = bundle.manifest
    emulated = m.profile["device"]
    costs = cost_model(m)
    n_segments = len(m.segments)
    compute_w = dev.compute_w if dev.compute_w is not None else float("nan")  # no published figure: no energy
    radio = radio_model(link_type_of(profile.name), profile.bandwidth_mbit * 1e6, warm=True)
    with CloudProcess([bundle.root]) as cloud, NetSim() as sim:
        target = sim.create_proxy("cloud", cloud.target)
        sim.apply_profile("cloud", profile)
        client = CloudClient(target, model=m.model, bundle_hash=m.content_hash, timeout_s=30)
        try:
            client.wait_ready()
            rtt_ms = float(np.median([client.ping() for _ in range(9)]))
            network = Network(profile.bandwidth_mbit * 1e6, rtt_ms)
            listed = candidates(costs, network)
            by_key = {(c.split, c.exits): c for c in reversed(listed) if c.codec in ("fp32", "-")}
            chosen = {
                "hybrid": _hybrid(listed, n_segments, args.split, args.codec),
                "edge_only": by_key[(n_segments, False)],
                "cloud_only": by_key[(0, False)],
                "planned": plan(costs, network, args.budget / 100),
            }
            runtime = EdgeRuntime(bundle, cloud=client, slowdown=emulated["factor"], threads=emulated["threads"])
            routes = {name: _Route(c) for name, c in chosen.items()}
            _measure(runtime, routes, x_test, (compute_w, radio, costs.response_bytes))
        finally:
            client.close()
    summaries = {
        name: route.summary(y_test, [e.name for e in m.exits_before(route.candidate.split)])
        for name, route in routes.items()
    }
    hybrid = summaries["hybrid"]
    results: dict[str, Any] = {
        "dataset": data.name,
        "n": len(y_test),
        "model": m.model,
        "split": hybrid["split"],
        "codec": hybrid["codec"],
        "budget_points": args.budget,
        "confidence": args.confidence,
        "criterion": args.criterion,
        "accuracy_full": accuracy_full,
        "accuracy_hybrid": hybrid["accuracy"],
        "exit_rate": hybrid["exit_rate"],
        "offload_rate": hybrid["offload_rate"],
        "bytes_per_offload": hybrid["bytes_per_offload"],
        "latency_ms": hybrid["latency_ms"],
        "baselines": {k: summaries[k] for k in ("edge_only", "cloud_only", "planned")},
        "routes": summaries,
        "device": emulated,
        "network": {**profile.__dict__, "rtt_ms_measured": rtt_ms, "link": radio.link},
        "energy": {"compute_w": compute_w, "radio": radio.__dict__, "radio_warm": True},
        "bundle": str(bundle.root),
        "content_hash": m.content_hash,
    }
    results["why"] = _why(summaries, profile, rtt_ms, emulated["name"])
    print(
        f"\nedgesplit demo: {data.name}, {len(y_test)} test samples, {m.model}, budget {args.budget} pt\n"
        f"device: {emulated['name']} ({dev.description}), emulated {emulated['factor']:.0f}x slower than this host"
        f" (published {emulated['device_ms']:g} ms / {emulated['host_ms']:.2f} ms here for its reference model)\n"
        f"network: {profile.name} ({profile.bandwidth_mbit:g} Mbit/s, {profile.rtt_ms:g} ms RTT) through netsim;"
        f" energy: {compute_w * 1e3:g} mW compute, {radio.link} radio ({radio.citation})\n"
    )
    print(_table(results))
    print(f"\nbundle: {bundle.root}\ntook {time.perf_counter() - start:.1f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0
