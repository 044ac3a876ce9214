"""``edgesplit bench network``: latency per strategy per network profile, through netsim, side by side.

One bundle (by default the accuracy benchmark's MobileNetV2 on Fashion-MNIST, from the same cache), profiled for
an edge device emulated ``--edge-slowdown`` times slower than this host (:mod:`edge.device`: a split only pays
when the device is slower than the server, and here both run on one machine); one cloud server in a subprocess at
the host's speed; one netsim proxy in front of it, driven through its Toxiproxy-style HTTP API. For every profile
the same test samples go through each strategy, one request at a time:

* ``edge_only`` — the whole model on the device; ``cloud_only`` — the raw input sent;
* ``best_split_no_exits`` — Neurosurgeon-like: the split (fp32, no exits) with the lowest expected latency;
* ``exits_edge_only`` — BranchyNet-like: the whole model on the device with its exits;
* ``planned`` — what :func:`edge.planner.plan` picks for the profile's bandwidth and RTT;
* ``oracle`` — the best of *every* configuration the planner knows, each measured here.

Then the adaptation run: :class:`edge.adapt.AdaptiveEdge` starts on Wi-Fi, the link drops to 3G mid-run, and the
plot shows latency per request and when the edge switched. Latency is broken down per request into edge compute,
cloud compute (the server's own time), transfer (RTT plus bytes over the profile's bandwidth) and queueing (the
rest of the round trip: serialisation, gRPC, the proxy's scheduling).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.accuracy import SIZES
from benchmarks.options import add_budget, add_out, add_training
from cloud.process import CloudProcess
from edge.adapt import AdaptiveEdge
from edge.client import CloudClient
from edge.evaluate import percentiles
from edge.planner import Candidate, CostModel, Network, candidates, cost_model, plan
from edge.runtime import Answer, EdgeRuntime
from netsim.profiles import PROFILES, Profile, profile_toxics
from protos.bundle import Bundle
from split.data import load_dataset
from split.partition import ModelConfig
from split.pipeline import BundleConfig, default_cache_dir, make_bundle
from split.profile import profile_bundle
from split.samples import as_array
from split.train import TrainConfig

__all__ = ["STRATEGIES", "add_arguments", "run"]

STRATEGIES = ("edge_only", "cloud_only", "best_split_no_exits", "exits_edge_only", "planned", "oracle")


class NetsimControl:
    """A netsim (or Toxiproxy) HTTP API: one proxy in front of the cloud, its toxics set per profile."""

    def __init__(self, api: str) -> None:
        self.api = api.rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def proxy(self, name: str, upstream: str) -> str:
        """Create the proxy on a free port; its ``host:port``."""
        created = self._call("POST", "/proxies", {"name": name, "listen": "127.0.0.1:0", "upstream": upstream})
        return str(created["listen"])

    def shape(self, name: str, profile: Profile) -> None:
        """Replace the proxy's toxics with the profile's."""
        for toxic in self._call("GET", f"/proxies/{name}/toxics"):
            self._call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}")
        for toxic in profile_toxics(profile):
            self._call("POST", f"/proxies/{name}/toxics", toxic.to_json())


@contextmanager
def _netsim() -> Iterator[NetsimControl]:
    """``edgesplit netsim`` in a subprocess on a free port; ready when it prints its API address."""
    command = [sys.executable, "-m", "split.cli", "netsim", "--api", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "netsim api on" not in line:
            raise RuntimeError(f"netsim did not start: {line!r}")
        yield NetsimControl("http://" + line.rsplit(" ", 1)[-1].strip())
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()


@dataclass(frozen=True)
class _Measured:
    label: str
    latencies: list[float]
    breakdown: dict[str, float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.latencies))


def _route(runtime: EdgeRuntime, c: Candidate) -> None:
    runtime.set_route(c.split, c.codec if c.codec != "-" else "fp32", c.exits)


def _measure(runtime: EdgeRuntime, samples: np.ndarray, configs: list[Candidate], network: Network) -> list[_Measured]:
    """Every configuration on every sample, interleaved (sample by sample, configuration by configuration), so
    that drift on a shared machine weighs on all of them alike; the route switch itself is an attribute swap."""
    for c in configs:  # warm every route (connection, sessions)
        _route(runtime, c)
        for x in samples[:2]:
            runtime.infer(x)
    latencies: list[list[float]] = [[] for _ in configs]
    parts = np.zeros((len(configs), 4))
    for x in samples:
        for j, c in enumerate(configs):
            _route(runtime, c)
            start = time.perf_counter()
            answer = runtime.infer(x)
            latencies[j].append((time.perf_counter() - start) * 1e3)
            parts[j] += _breakdown(answer, latencies[j][-1], network)
    names = ("edge_compute_ms", "cloud_compute_ms", "transfer_ms", "queueing_ms")
    return [
        _Measured(c.label, latencies[j], {k: float(v / len(samples)) for k, v in zip(names, parts[j], strict=True)})
        for j, c in enumerate(configs)
    ]


def _link(client: CloudClient, profile: Profile, pings: int = 15) -> Network:
    """The network as the edge sees it: the profile's bandwidth and the median of ``pings`` measured round trips
    (which include gRPC's and the proxy's own overhead, as the adaptive edge's estimate does)."""
    return Network(profile.bandwidth_mbit * 1e6, float(np.median([client.ping() for _ in range(pings)])))


def _breakdown(answer: Answer, total_ms: float, network: Network) -> np.ndarray:
    if answer.source != "cloud":
        return np.array([total_ms, 0.0, 0.0, 0.0])
    transfer = network.rtt_ms + network.transfer_ms(answer.bytes_sent)
    queueing = max(answer.rpc_ms - answer.server_ms - transfer, 0.0)
    return np.array([total_ms - answer.rpc_ms, answer.server_ms, transfer, queueing])


def _strategies(costs: CostModel, network: Network, budget: float, listed: list[Candidate]) -> dict[str, Candidate]:
    n = len(costs.segment_ms)

    def pick(split: int, exits: bool) -> Candidate:
        return next(c for c in listed if c.split == split and c.exits == exits and c.codec in ("fp32", "-"))

    no_exits = [c for c in listed if not c.exits and c.codec in ("fp32", "-")]
    return {
        "edge_only": pick(n, False),
        "cloud_only": pick(0, False),
        "best_split_no_exits": min(no_exits, key=lambda c: c.latency_ms),
        "exits_edge_only": pick(n, True),
        "planned": plan(costs, network, budget),
    }


def _profile_run(
    runtime: EdgeRuntime, client: CloudClient, samples: np.ndarray, costs: CostModel, profile: Profile, budget: float
) -> dict[str, Any]:
    """Two passes over the same samples. Selection: every configuration, interleaved; the oracle is the best
    measured. Evaluation: the six strategies' configurations again, interleaved, and these are the figures reported
    (the minimum of many noisy means is biased low: measuring the winner afresh removes that)."""
    network = _link(client, profile)
    listed = candidates(costs, network)
    chosen = _strategies(costs, network, budget, listed)
    selection = {m.label: m for m in _measure(runtime, samples, listed, network)}
    oracle_label = min(selection.values(), key=lambda m: m.mean).label
    labels = {s: oracle_label if s == "oracle" else chosen[s].label for s in STRATEGIES}
    by_label = {c.label: c for c in listed}
    evaluated = {
        m.label: m for m in _measure(runtime, samples, [by_label[x] for x in dict.fromkeys(labels.values())], network)
    }
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        m = evaluated[labels[strategy]]
        p = percentiles(m.latencies)
        out[strategy] = {"config": m.label, "mean_ms": p["mean"], "p50_ms": p["p50"], "p95_ms": p["p95"], **m.breakdown}
        out[strategy]["expected_ms"] = by_label[m.label].latency_ms
    out["network"] = {"bandwidth_bps": network.bandwidth_bps, "rtt_ms_measured": network.rtt_ms}
    out["selection_pass"] = {label: m.mean for label, m in sorted(selection.items(), key=lambda kv: kv[1].mean)}
    return out


def _adaptation(
    runtime: EdgeRuntime,
    client: CloudClient,
    control: NetsimControl,
    costs: CostModel,
    samples: np.ndarray,
    before: Profile,
    after: Profile,
    drop_at: int,
    budget: float,
) -> dict[str, Any]:
    control.shape("cloud", before)
    edge = AdaptiveEdge(runtime, client, costs, _link(client, before), budget=budget)
    latencies, routes = [], []
    for i, x in enumerate(samples):
        if i == drop_at:
            control.shape("cloud", after)
        start = time.perf_counter()
        edge.infer(x)
        latencies.append((time.perf_counter() - start) * 1e3)
        routes.append(edge.plan.label)
    edge.wait_probes(timeout=30)
    switches = [s for s in edge.switches if s.request >= drop_at]
    return {
        "from": before.name,
        "to": after.name,
        "drop_at_request": drop_at,
        "switch_after_requests": (switches[0].request - drop_at) if switches else None,
        "mean_ms_before_drop": float(np.mean(latencies[:drop_at])),
        "mean_ms_last_50": float(np.mean(latencies[-50:])),
        "switches": edge.status()["switches"],
        "latency_ms": latencies,
        "plan": routes,
    }


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """``latency.png``, ``breakdown.png`` and ``adaptation.png`` under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(results["profiles"])
    paths = []
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(STRATEGIES)
    for j, strategy in enumerate(STRATEGIES):
        xs = [i + j * width for i in range(len(profiles))]
        means = [results["profiles"][p][strategy]["mean_ms"] for p in profiles]
        p95 = [results["profiles"][p][strategy]["p95_ms"] for p in profiles]
        ax.bar(xs, means, width, label=strategy)
        ax.scatter(xs, p95, marker="_", color="black", zorder=5)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(profiles))], profiles)
    ax.set(ylabel="latency per request, ms (bar: mean, tick: p95)", yscale="log")
    ax.legend(fontsize=7, ncols=3)
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(profiles), figsize=(5 * len(profiles), 4), squeeze=False)
    parts = ("edge_compute_ms", "cloud_compute_ms", "transfer_ms", "queueing_ms")
    for ax, p in zip(axes[0], profiles, strict=True):
        bottom = np.zeros(len(STRATEGIES))
        for part in parts:
            values = np.array([results["profiles"][p][s][part] for s in STRATEGIES])
            ax.bar(range(len(STRATEGIES)), values, bottom=bottom, label=part.removesuffix("_ms"))
            bottom += values
        ax.set_xticks(range(len(STRATEGIES)), STRATEGIES, rotation=30, ha="right", fontsize=7)
        ax.set(title=p, ylabel="mean ms per request")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "breakdown.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    a = results["adaptation"]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(a["latency_ms"], linewidth=0.8, label="latency per request")
    ax.axvline(a["drop_at_request"], color="red", linestyle="--", label=f"link drops: {a['from']} -> {a['to']}")
    for s in a["switches"]:
        ax.axvline(s["request"], color="green", linestyle=":", label=f"switch: {s['to']}")
    ax.set(xlabel="request", ylabel="ms", yscale="log", title="adaptation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "adaptation.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench network``."""
    add_out(parser)
    add_training(parser)
    add_budget(parser)
    group = parser
    group.add_argument("--profiles", nargs="+", default=["3g", "4g", "wifi"], choices=sorted(PROFILES))
    group.add_argument("--samples", type=int, default=40, help="test samples per configuration")
    group.add_argument("--dataset", default="fashion-mnist", choices=["digits", "fashion-mnist"])
    group.add_argument("--family", default="mobilenetv2", choices=sorted(SIZES), help="model family (network)")
    group.add_argument(
        "--edge-slowdown",
        type=float,
        default=1000.0,
        help="emulate an edge device this many times slower than this host (default %(default)s: an MCU-class node)",
    )
    group.add_argument("--adapt-requests", type=int, default=300, help="requests in the adaptation run")


def run(args: argparse.Namespace) -> int:
    """Run the network benchmark; print the table; write results.json and the plots."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_dataset(args.dataset, **({"data_dir": args.data_dir} if args.dataset == "fashion-mnist" else {}))
    cache = args.cache_dir or default_cache_dir()
    model = ModelConfig(
        args.family,
        width=SIZES[args.family]["width"],
        in_channels=data.input_shape[0],
        image_size=data.input_shape[-1],
    )
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)  # as the accuracy benchmark: one cache
    config = BundleConfig(budget=args.budget / 100, confidence=args.confidence)
    bundle, _ = make_bundle(data, model, train, config, cache)
    torch.set_num_threads(1)
    profile_bundle(bundle, data.x_cal, data.y_cal, runs=30, edge_slowdown=args.edge_slowdown)
    bundle = Bundle.load(bundle.root)
    costs = cost_model(bundle.manifest)
    budget = args.budget / 100
    samples = data.x_test[: args.samples]
    results: dict[str, Any] = {
        "benchmark": "network",
        "model": bundle.manifest.model,
        "dataset": data.name,
        "samples": len(samples),
        "budget_points": args.budget,
        "edge_slowdown": args.edge_slowdown,
        "command": "edgesplit bench network --out " + str(args.out),
    }
    with CloudProcess([bundle.root]) as cloud, _netsim() as control:
        target = control.proxy("cloud", cloud.target)
        client = CloudClient(
            target, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash, timeout_s=30
        )
        client.wait_ready()
        runtime = EdgeRuntime(bundle, cloud=client, slowdown=args.edge_slowdown)
        results["profiles"] = {}
        for name in args.profiles:
            control.shape("cloud", PROFILES[name])
            print(f"profile {name}: measuring every configuration", file=sys.stderr)
            results["profiles"][name] = _profile_run(runtime, client, samples, costs, PROFILES[name], budget)
        adapt_samples = np.resize(as_array(data.x_test), (args.adapt_requests, *data.x_test.shape[1:]))
        results["adaptation"] = _adaptation(
            runtime,
            client,
            control,
            costs,
            adapt_samples,
            PROFILES["wifi"],
            PROFILES["3g"],
            args.adapt_requests // 3,
            budget,
        )
        client.close()
    results["profiles_used"] = {n: PROFILES[n].__dict__ for n in args.profiles}
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    results["plots"] = [p.name for p in plot(results, args.out)]
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    return 0


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'profile':<8} {'strategy':<22} {'mean ms':>9} {'p95 ms':>9} {'expected':>9}  config", "-" * 90]
    for p, row in results["profiles"].items():
        for s in STRATEGIES:
            r = row[s]
            expected = f"{r['expected_ms']:>9.2f}"
            lines.append(f"{p:<8} {s:<22} {r['mean_ms']:>9.2f} {r['p95_ms']:>9.2f} {expected}  {r['config']}")
    a = results["adaptation"]
    lines.append(
        f"\nadaptation {a['from']} -> {a['to']} at request {a['drop_at_request']}: switched after"
        f" {a['switch_after_requests']} requests; mean {a['mean_ms_before_drop']:.1f} ms before,"
        f" {a['mean_ms_last_50']:.1f} ms over the last 50"
    )
    return "\n".join(lines)
