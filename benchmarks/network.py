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
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.accuracy import SIZES
from benchmarks.bottleneck import add_bottleneck_training
from benchmarks.options import add_budget, add_out, add_training
from cloud.process import CloudProcess
from edge.adapt import AdaptiveEdge
from edge.client import CloudClient
from edge.devices import DEVICES
from edge.energy import RadioModel, answer_energy_mj, link_type_of, radio_model
from edge.evaluate import percentiles
from edge.planner import Candidate, CostModel, Energy, Network, candidates, cost_model, plan
from edge.runtime import Answer, EdgeRuntime
from netsim.profiles import PROFILES, Profile, parse_profile, profile_toxics
from protos.bundle import Bundle
from split.data import load_dataset
from split.partition import ModelConfig
from split.pipeline import BundleConfig, Pretrained, default_cache_dir, make_bundle
from split.profile import PROFILED_CODECS, profile_bundle
from split.samples import as_array
from split.train import TrainConfig

__all__ = ["STRATEGIES", "add_arguments", "run"]

STRATEGIES = (
    "edge_only", "cloud_only", "cloud_only_jpeg", "best_split_no_exits", "exits_edge_only", "best_bottleneck",
    "planned", "oracle", "planned_energy",
)  # fmt: skip
"""``cloud_only_jpeg`` only where the bundle has an image codec at split point 0 (an image bundle, profiled);
``planned_energy`` (the planner's least-mJ route within the budget) only where the device has a power figure."""


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
    accuracy: float
    energy_mj: float | None  # per inference: compute power x the edge's measured compute + the radio for the bytes

    @property
    def mean(self) -> float:
        return float(np.mean(self.latencies))


def _route(runtime: EdgeRuntime, c: Candidate) -> None:
    runtime.set_route(c.split, c.route_codec, c.exits, c.bottleneck)


def _measure(
    runtime: EdgeRuntime,
    samples: np.ndarray,
    labels: np.ndarray,
    configs: list[Candidate],
    network: Network,
    energy: Energy | None = None,
    response_bytes: float = 0.0,
) -> list[_Measured]:
    """Every configuration on every sample, interleaved (sample by sample, configuration by configuration), so
    that drift on a shared machine weighs on all of them alike; the route switch itself is an attribute swap."""
    for c in configs:  # warm every route (connection, sessions)
        _route(runtime, c)
        for x in samples[:2]:
            runtime.infer(x)
    latencies: list[list[float]] = [[] for _ in configs]
    parts = np.zeros((len(configs), 4))
    correct, joules = np.zeros(len(configs)), np.zeros(len(configs))
    for x, y in zip(samples, labels, strict=True):
        for j, c in enumerate(configs):
            _route(runtime, c)
            start = time.perf_counter()
            answer = runtime.infer(x)
            latencies[j].append((time.perf_counter() - start) * 1e3)
            parts[j] += _breakdown(answer, latencies[j][-1], network)
            correct[j] += answer.label == int(y)
            if energy is not None:
                ms = latencies[j][-1]
                joules[j] += answer_energy_mj(answer, ms, energy.compute_w, energy.radio, response_bytes)
    names = ("edge_compute_ms", "cloud_compute_ms", "transfer_ms", "queueing_ms")
    n = len(samples)
    return [
        _Measured(
            c.label,
            latencies[j],
            {k: float(v / n) for k, v in zip(names, parts[j], strict=True)},
            float(correct[j] / n),
            float(joules[j] / n) if energy is not None else None,
        )
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
    chosen = {
        "edge_only": pick(n, False),
        "cloud_only": pick(0, False),
        "best_split_no_exits": min(no_exits, key=lambda c: c.latency_ms),
        "exits_edge_only": pick(n, True),
        "planned": plan(costs, network, budget),
    }
    jpeg = [c for c in listed if c.split == 0 and c.codec.startswith("jpeg")]
    if jpeg:  # the strongest cloud-only app: the photo as a JPEG (the best quality profiled)
        chosen["cloud_only_jpeg"] = max(jpeg, key=lambda c: (c.accuracy, -c.latency_ms))
    floor = costs.accuracy_full - budget - 1e-12
    through = [c for c in listed if c.bottleneck and c.accuracy >= floor]
    if through:  # the fastest route through a learned bottleneck within the budget (issue 18)
        chosen["best_bottleneck"] = min(through, key=lambda c: c.latency_ms)
    return chosen


def _excess_ms(listed: list[Candidate], selection: dict[str, _Measured]) -> dict[tuple[int, str], float]:
    """Per offloading route (split, codec) the selection pass measured: what one offload cost beyond the cost
    model's expectation, (measured - expected) / offload rate, over its configurations offloading at least half."""
    gaps: dict[tuple[int, str], list[float]] = {}
    for c in listed:
        if c.label in selection and c.offload_rate >= 0.5:
            gaps.setdefault((c.split, c.codec), []).append((selection[c.label].mean - c.latency_ms) / c.offload_rate)
    return {k: float(np.median(v)) for k, v in gaps.items()}


def _overhead_ms(excess: dict[tuple[int, str], float]) -> float:
    """One per-offload overhead for every route: the median excess (>= 0)."""
    return max(0.0, float(np.median(list(excess.values())))) if excess else 0.0


def _served(costs: CostModel, excess: dict[tuple[int, str], float]) -> CostModel:
    """``costs`` with each offloading route's cost as served: the selection pass's excess over the profile (the
    profile times the tail in-process, the served route adds the server's decode, executor hop and batcher, the
    request's building and the proxy) added to that route's decode, and the median excess to the routes not
    measured. The edge learns the same from its traffic: every reply carries the server's time."""
    if not excess:
        return costs
    default = float(np.median(list(excess.values())))
    splits = []
    for sc in costs.splits:
        wire = {
            codec: replace(w, decode_ms=max(0.0, w.decode_ms + excess.get((sc.index, codec), default)))
            for codec, w in sc.wire.items()
        }
        splits.append(replace(sc, wire=wire))
    return replace(costs, splits=tuple(splits))


def _profile_run(
    runtime: EdgeRuntime,
    client: CloudClient,
    samples: np.ndarray,
    costs: CostModel,
    profile: Profile,
    budget: float,
    oracle_within: float = float("inf"),
    energy: Energy | None = None,
    labels: np.ndarray | None = None,
    calibrate: str = "route",
) -> dict[str, Any]:
    """Two passes over the same samples. Selection: every configuration expected within ``oracle_within`` of the
    fastest (the strategies' own always), interleaved; the oracle is the best measured one within the accuracy
    budget, and the offloads measured give the link's per-offload overhead (:func:`_overhead_ms`), which the
    planner then knows, as an edge knows its link from its own traffic. Evaluation: the strategies' configurations
    again, interleaved, and these are the figures reported (the minimum of many noisy means is biased low:
    measuring the winner afresh removes that)."""
    pinged = _link(client, profile)
    labels = np.zeros(len(samples), np.int64) if labels is None else labels
    measure = partial(_measure, runtime, samples, labels, network=pinged, energy=energy,
                      response_bytes=costs.response_bytes)  # fmt: skip
    listed = candidates(costs, pinged, energy)
    floor = costs.accuracy_full - budget - 1e-12
    fastest = min(c.latency_ms for c in listed if c.accuracy >= floor)
    shortlist = [c for c in listed if c.accuracy >= floor and c.latency_ms <= oracle_within * fastest]
    shortlist += [c for c in _strategies(costs, pinged, budget, listed).values() if c not in shortlist]
    selection = {m.label: m for m in measure(shortlist)}
    admissible = {c.label for c in shortlist if c.accuracy >= floor}
    oracle_label = min((m for m in selection.values() if m.label in admissible), key=lambda m: m.mean).label

    profiled = {c.label: c for c in listed}  # the profile's own expectation, for the record
    excess = _excess_ms(listed, selection)
    network = Network(pinged.bandwidth_bps, pinged.rtt_ms, overhead_ms=_overhead_ms(excess))
    if calibrate == "route":
        costs, network = _served(costs, excess), pinged
    elif calibrate == "none":
        network = pinged
    listed = candidates(costs, network, energy)
    chosen = _strategies(costs, network, budget, listed)
    if energy is not None:
        chosen["planned_energy"] = plan(costs, network, budget, objective="energy", energy=energy)
    routes = {s: oracle_label if s == "oracle" else chosen[s].label for s in STRATEGIES if s in chosen or s == "oracle"}
    by_label = {c.label: c for c in listed}
    evaluated = {m.label: m for m in measure([by_label[x] for x in dict.fromkeys(routes.values())])}
    out: dict[str, Any] = {}
    for strategy, label in routes.items():
        m, c = evaluated[label], by_label[label]
        p = percentiles(m.latencies)
        out[strategy] = {"config": m.label, "mean_ms": p["mean"], "p50_ms": p["p50"], "p95_ms": p["p95"], **m.breakdown}
        out[strategy].update(expected_ms=c.latency_ms, accuracy_expected=c.accuracy, accuracy=m.accuracy,
                             energy_mj=m.energy_mj, energy_mj_expected=c.energy_mj,
                             expected_ms_profile=profiled[label].latency_ms)  # fmt: skip
    out["network"] = {"bandwidth_bps": network.bandwidth_bps, "rtt_ms_measured": network.rtt_ms,
                      "offload_overhead_ms": network.overhead_ms, "calibrate": calibrate}  # fmt: skip
    out["selection_pass"] = {label: m.mean for label, m in sorted(selection.items(), key=lambda kv: kv[1].mean)}
    out["shortlist"] = len(shortlist)
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
    shown = [s for s in STRATEGIES if all(s in results["profiles"][p] for p in profiles)]
    paths = []
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(shown)
    for j, strategy in enumerate(shown):
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
        bottom = np.zeros(len(shown))
        for part in parts:
            values = np.array([results["profiles"][p][s][part] for s in shown])
            ax.bar(range(len(shown)), values, bottom=bottom, label=part.removesuffix("_ms"))
            bottom += values
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right", fontsize=7)
        ax.set(title=p, ylabel="mean ms per request")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "breakdown.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    a = results.get("adaptation")
    if not a:
        return paths
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
    group.add_argument(
        "--profiles",
        nargs="+",
        type=_profile,
        default=["3g", "4g", "wifi"],
        metavar="PROFILE",
        help=f"network profiles: {', '.join(sorted(PROFILES))} or BANDWIDTH/RTT[/JITTER] (e.g. 10mbit/40ms/5ms)",
    )
    group.add_argument("--samples", type=int, default=40, help="test samples per configuration")
    group.add_argument("--dataset", default="fashion-mnist", choices=["digits", "fashion-mnist"])
    group.add_argument("--family", default="mobilenetv2", choices=sorted(SIZES), help="model family (network)")
    group.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help=f"the emulated edge device ({', '.join(DEVICES)}; default: cortex-m4, with --pretrained rpi4)",
    )
    group.add_argument(
        "--edge-slowdown",
        type=float,
        default=None,
        help="instead of --device: an edge this many times slower than this host (experiments)",
    )
    group.add_argument("--adapt-requests", type=int, default=300, help="requests in the adaptation run")
    group.add_argument(
        "--oracle-within",
        type=float,
        default=3.0,
        help="the oracle measures every configuration expected within this factor of the fastest (default %(default)s)",
    )
    group.add_argument(
        "--calibrate",
        default="route",
        choices=["route", "offload", "none"],
        help="what the planner learns from the selection pass's offloads: each route's served cost (route), one"
        " per-offload overhead (offload), or nothing, the profile alone (none); default %(default)s",
    )
    group.add_argument("--compute-w", type=float, default=None, help="the device's compute power (default: its own)")
    group.add_argument(
        "--radio-cold",
        action="store_true",
        help="count the radio's ramp and tail per transfer (default: a stream of requests keeps the radio up)",
    )
    scale = parser.add_argument_group("--pretrained: the 224-px MobileNetV2 (ImageNet weights, transferred)")
    scale.add_argument("--pretrained", action="store_true", help="MobileNetV2 at 224 px on Fashion-MNIST photos")
    scale.add_argument("--image-size", type=int, default=224, help="pixels of the photos (default %(default)s)")
    scale.add_argument("--limit-train", type=int, default=2000, help="transfer samples (default %(default)s)")
    scale.add_argument("--limit-cal", type=int, default=400, help="calibration/profile samples (default %(default)s)")
    scale.add_argument(
        "--codecs", nargs="+", default=None, help="codecs profiled (default: the profiler's; --pretrained: a subset)"
    )
    scale.add_argument(
        "--bottleneck", default=None, metavar="SPLIT:C[:STRIDE]", help="also a learned bottleneck there (issue 18)"
    )
    add_bottleneck_training(scale)


def _energy(recorded: dict[str, Any] | None, compute_w: float | None) -> tuple[float] | None:
    """The device's compute power (W) from the profile's device record or ``--compute-w``; None: no energy."""
    watts = compute_w if compute_w is not None else (recorded or {}).get("compute_w")
    return (float(watts),) if watts else None


def _radio(name: str, profile: Profile, warm: bool) -> RadioModel:
    """The radio model of a profile's link type (a BANDWIDTH/RTT spec: Wi-Fi, :func:`edge.energy.link_type_of`)."""
    return radio_model(link_type_of(name), profile.bandwidth_mbit * 1e6, warm=warm)


def _profile(spec: str) -> str:
    try:
        parse_profile(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _bundle(
    args: argparse.Namespace,
) -> tuple[Bundle, Any, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, str]:
    """The benchmark's bundle, profiling samples and labels (and their uint8 frames for an image bundle), the test
    samples (uint8 frames for an image bundle) and the data's name."""
    cache = args.cache_dir or default_cache_dir()
    config = BundleConfig(budget=args.budget / 100, confidence=args.confidence)
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)  # as the accuracy benchmark: one cache
    if args.pretrained:
        from benchmarks.transfer import fashion_photos, photo_dataset

        sizes = (args.limit_train, args.limit_cal, max(args.samples, 1))
        crops, info = fashion_photos(args.data_dir, args.image_size, *sizes)
        data = photo_dataset(crops, info, "mobilenet_v2")
        model = ModelConfig("mobilenet_v2", 1.0, 3, args.image_size, len(data.classes))
        bundle, net = make_bundle(data, model, train, config, cache, pretrained=Pretrained())
        if args.bottleneck:  # a copy with the learned bottleneck (bench bottleneck's, cached)
            from benchmarks.bottleneck import with_bottleneck
            from split.bottleneck import BottleneckSpec

            bundle = with_bottleneck(bundle, BottleneckSpec.parse(args.bottleneck), net, data, args)
        frames = crops[len(crops) - sizes[2] :]  # the uint8 photos themselves: the edge preprocesses (or encodes)
        cal_frames = crops[sizes[0] : sizes[0] + sizes[1]]
        return bundle, data.x_cal, data.y_cal, cal_frames, frames, data.y_test, data.name
    data = load_dataset(args.dataset, **({"data_dir": args.data_dir} if args.dataset == "fashion-mnist" else {}))
    model = ModelConfig(
        args.family, width=SIZES[args.family]["width"], in_channels=data.input_shape[0],
        image_size=data.input_shape[-1],
    )  # fmt: skip
    bundle, _ = make_bundle(data, model, train, config, cache)
    n = args.samples
    return bundle, data.x_cal, data.y_cal, None, as_array(data.x_test[:n]), data.y_test[:n], data.name


def run(args: argparse.Namespace) -> int:
    """Run the network benchmark; print the table; write results.json and the plots."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bundle, x_cal, y_cal, frames_cal, samples, y_test, data_name = _bundle(args)
    torch.set_num_threads(1)
    default_codecs = ("fp32", "int8", "int8+zstd") if args.pretrained else PROFILED_CODECS
    codecs = tuple(args.codecs or default_codecs)
    device_name = None if args.edge_slowdown else args.device or ("rpi4" if args.pretrained else "cortex-m4")
    profile_bundle(
        bundle, x_cal, y_cal, runs=30, codecs=codecs, edge_slowdown=args.edge_slowdown or 1.0,
        device_name=device_name, frames=None if frames_cal is None else list(frames_cal), image_codecs=("jpeg90",),
    )  # fmt: skip
    bundle = Bundle.load(bundle.root)
    costs = cost_model(bundle.manifest)
    recorded = bundle.manifest.profile
    slowdown = float(recorded["edge_slowdown"])
    energy = _energy(recorded.get("device"), args.compute_w)
    budget = args.budget / 100
    profiles = {spec: parse_profile(spec) for spec in args.profiles}
    results: dict[str, Any] = {
        "benchmark": "network",
        "model": bundle.manifest.model,
        "dataset": data_name,
        "samples": len(samples),
        "budget_points": args.budget,
        "edge_slowdown": slowdown,
        "device": recorded.get("device"),
        "compute_w": energy[0] if energy else None,
        "radio_warm": not args.radio_cold,
        "oracle_within": args.oracle_within,
        "command": "edgesplit bench network " + " ".join(sys.argv[3:]),
    }
    with CloudProcess([bundle.root]) as cloud, _netsim() as control:
        target = control.proxy("cloud", cloud.target)
        client = CloudClient(
            target, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash, timeout_s=120
        )
        client.wait_ready()
        threads = int(recorded.get("device", {}).get("threads", 1))
        # A deadline no route reaches: each strategy is measured at what it costs, never answered locally instead
        # (a request the edge gave up on would still hold the shaped link and delay the next ones).
        runtime = EdgeRuntime(bundle, cloud=client, slowdown=slowdown, threads=threads, deadline_ms=120_000)
        results["profiles"] = {}
        for name, profile in profiles.items():
            control.shape("cloud", profile)
            print(f"profile {name}: measuring the configurations", file=sys.stderr)
            power = None if energy is None else Energy(energy[0], _radio(name, profile, not args.radio_cold))
            results["profiles"][name] = _profile_run(
                runtime, client, samples, costs, profile, budget, args.oracle_within, power, y_test, args.calibrate
            )
        if args.adapt_requests:
            adapt_samples = np.resize(samples, (args.adapt_requests, *samples.shape[1:]))
            results["adaptation"] = _adaptation(
                runtime, client, control, costs, adapt_samples, PROFILES["wifi"], PROFILES["3g"],
                args.adapt_requests // 3, budget,
            )  # fmt: skip
        client.close()
    results["profiles_used"] = {n: p.__dict__ for n, p in profiles.items()}
    results["targets"] = _targets(results["profiles"])
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    results["plots"] = [p.name for p in plot(results, args.out)]
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    return 0


def _targets(profiles: dict[str, Any]) -> dict[str, Any]:
    """Per profile: planned / oracle, planned / the better of edge-only and cloud-only JPEG (or fp32), and how far
    the planner's expectation was from the measurement (planned and every strategy)."""
    out = {}
    for name, row in profiles.items():
        single = [row[s]["mean_ms"] for s in ("edge_only", "cloud_only_jpeg") if s in row] or [
            row["cloud_only"]["mean_ms"]
        ]
        out[name] = {
            "planned_vs_oracle": row["planned"]["mean_ms"] / row["oracle"]["mean_ms"],
            "planned_vs_best_single": row["planned"]["mean_ms"] / min(single),
            "planned_through_bottleneck": "bottleneck:" in row["planned"]["config"],
            "prediction_error": {s: row[s]["expected_ms"] / row[s]["mean_ms"] - 1 for s in STRATEGIES if s in row},
            "prediction_error_profile_alone": {
                s: row[s]["expected_ms_profile"] / row[s]["mean_ms"] - 1 for s in STRATEGIES if s in row
            },
        }
    return out


def _table(results: dict[str, Any]) -> str:
    head = f"{'profile':<16} {'strategy':<20} {'mean ms':>9} {'p95 ms':>9} {'expected':>9} {'acc':>7} {'mJ':>9}  config"
    device = (results.get("device") or {}).get("name") or f"the host x{results['edge_slowdown']:g}"
    lines = [f"device: {device}", head]
    lines.append("-" * len(head))
    for p, row in results["profiles"].items():
        for s in STRATEGIES:
            if s not in row:
                continue
            r = row[s]
            mj = f"{r['energy_mj']:>9.2f}" if r.get("energy_mj") is not None else f"{'-':>9}"
            lines.append(
                f"{p:<16} {s:<20} {r['mean_ms']:>9.2f} {r['p95_ms']:>9.2f} {r['expected_ms']:>9.2f}"
                f" {r['accuracy']:>7.1%} {mj}  {r['config']}"
            )
        t = results["targets"][p]
        lines.append(
            f"{'':<16} planned/oracle {t['planned_vs_oracle']:.3f}, planned/best single route"
            f" {t['planned_vs_best_single']:.3f}, planned expected/measured {1 + t['prediction_error']['planned']:.3f}"
            f" (profile alone {1 + t['prediction_error_profile_alone']['planned']:.3f}), worst strategy"
            f" {1 + max(t['prediction_error'].values(), key=abs):.3f}"
        )
    a = results.get("adaptation")
    if a:
        lines.append(
            f"\nadaptation {a['from']} -> {a['to']} at request {a['drop_at_request']}: switched after"
            f" {a['switch_after_requests']} requests; mean {a['mean_ms_before_drop']:.1f} ms before,"
            f" {a['mean_ms_last_50']:.1f} ms over the last 50"
        )
    return "\n".join(lines)
