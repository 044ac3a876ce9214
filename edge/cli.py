"""``edgesplit edge``: run a bundle's head on inputs (an ``.npy`` file, a photo, a directory of photos), offloading
to a cloud when needed; or serve apps on the device over KServe v2 (``--listen``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.adapt import AdaptiveEdge
from edge.auditor import AuditConfig
from edge.channel import ClientTLS
from edge.client import CloudClient
from edge.devices import DEVICES, manifest_factor
from edge.errors import EdgeError
from edge.evaluate import evaluate
from edge.metrics import MetricsServer
from edge.plan_cli import parse_bandwidth
from edge.planner import Network, cost_model, tensor_routes
from edge.runtime import EdgeRuntime
from edge.server import EdgeServer
from edge.triton import TritonClient
from protos.bundle import Bundle, Manifest
from protos.codecs import Codec
from protos.credentials import read_tokens

__all__ = ["IMAGE_SUFFIXES", "add_arguments", "device_emulation", "read_inputs", "run", "with_thresholds"]


def _codec(name: str) -> str:
    """``--codec``: a codec name (:mod:`protos.codecs`), checked."""
    try:
        return Codec.parse(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--bundle", required=True, type=Path, metavar="DIR", help="bundle directory")
    parser.add_argument(
        "--cloud",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="cloud server; several IP:PORT comma-separated: round robin over the replicas; without it the edge"
        " runs alone",
    )
    parser.add_argument(
        "--cloud-engine",
        choices=("edgesplit", "triton"),
        default="edgesplit",
        help="what serves --cloud: `edgesplit cloud` (default), or NVIDIA Triton on the repository that"
        " `edgesplit export --format triton` wrote from this bundle (its configs must carry the bundle's hash)",
    )
    parser.add_argument(
        "--triton-prefix",
        metavar="NAME",
        help="with --cloud-engine triton: the repository's model-name prefix (export's --model-name; default: the"
        " bundle's model)",
    )
    parser.add_argument("--split", type=int, help="split point (default: the manifest's; edge-only without --cloud)")
    parser.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="x.npy (model-ready samples [N, *input shape] float32, or uint8 RGB frames [N, H, W, 3]), a photo"
        " (JPEG, PNG, WebP) or a directory of photos; photos and frames need a bundle with image preprocessing",
    )
    parser.add_argument(
        "--text", action="append", metavar="TEXT", help="a text bundle: answer this text (repeat for several)"
    )
    parser.add_argument("--texts", type=Path, metavar="FILE", help="a text bundle: answer each line of FILE (UTF-8)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="serve KServe v2 to apps on the device instead (port 0: a free one)"
    )
    parser.add_argument("--labels", type=Path, metavar="NPY", help="labels [N]: print accuracy and exit rates")
    parser.add_argument(
        "--codec",
        type=_codec,
        help="wire codec of the split tensor (default: the manifest's); at split 0 of an image bundle also png or"
        " jpeg<Q> (e.g. jpeg90): the frame itself, encoded",
    )
    parser.add_argument("--no-exits", action="store_true", help="never exit early")
    parser.add_argument(
        "--bottleneck",
        action="store_true",
        help="offload through the split point's learned bottleneck (export --bottleneck): the code travels",
    )
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXIT=VALUE",
        help="override an exit's calibrated threshold, e.g. exit0=0.9 (repeat for several exits)",
    )
    parser.add_argument(
        "--adapt",
        metavar="BANDWIDTH/RTT",
        help="plan from the bundle's profile for this first guess of the link (e.g. 18.9mbit/20) and re-plan as"
        " requests show the real one; the final plan is printed (with --listen: in each reply's edgesplit.plan)",
    )
    parser.add_argument(
        "--emulate-slowdown",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="run segments as a device FACTOR times slower than this host (for tests and benchmarks; default 1)",
    )
    parser.add_argument(
        "--device",
        metavar="NAME",
        help=f"run segments as a named device ({', '.join(DEVICES)}) with the factor the bundle was profiled"
        " with (`edgesplit profile --device NAME`)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="cloud connection wait at start, seconds")
    parser.add_argument(
        "--deadline-ms",
        type=float,
        default=1000.0,
        help="per-request deadline: past it (or with the cloud gone) the edge answers locally, marked degraded",
    )
    parser.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics on http://HOST:PORT/metrics (with --listen)"
    )
    parser.add_argument("--race", action="store_true", help="run the rest locally while the tensor is in flight")
    audit = parser.add_argument_group("online audits of exited samples (edge.auditor; default: off)")
    audit.add_argument(
        "--audit-rate",
        type=float,
        metavar="FRACTION",
        help="also send this fraction of exited samples to the cloud, in the background (e.g. 0.05), to estimate"
        " each exit's agreement with the full model",
    )
    audit.add_argument("--audit-max-rps", type=float, default=20.0, help="at most this many audits a second")
    audit.add_argument("--audit-window", type=int, default=2000, help="requests the estimates cover")
    audit.add_argument(
        "--adaptive-thresholds",
        action="store_true",
        help="re-calibrate the thresholds in force from the evidence (tighten at once when an exit breaks its share"
        " of the budget, loosen gradually back toward the calibrated one); needs --audit-rate",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="write the summary (with --labels) as JSON; a text bundle: the answers and counters (-: to stdout)",
    )
    security = parser.add_argument_group("cloud security (default: plaintext, no token)")
    security.add_argument("--cloud-ca", metavar="FILE", help="TLS: verify the cloud with this CA certificate (PEM)")
    security.add_argument("--cloud-cert", metavar="FILE", help="mutual TLS: this edge's certificate (PEM)")
    security.add_argument("--cloud-key", metavar="FILE", help="mutual TLS: its private key (PEM)")
    security.add_argument(
        "--cloud-server-name", metavar="NAME", help="TLS: the name the cloud's certificate carries, if not the host"
    )
    security.add_argument(
        "--cloud-token-file", metavar="FILE", help="send the file's first token as 'authorization: Bearer <token>'"
    )


def _tls(args: argparse.Namespace) -> ClientTLS | None:
    """TLS when any of --cloud-ca, --cloud-cert, --cloud-key or --cloud-server-name is given."""
    if not any((args.cloud_ca, args.cloud_cert, args.cloud_key, args.cloud_server_name)):
        return None
    return ClientTLS(args.cloud_ca, args.cloud_cert, args.cloud_key, args.cloud_server_name)


def _client(args: argparse.Namespace, manifest: Manifest) -> CloudClient | None:
    if not args.cloud:
        return None
    token = read_tokens(args.cloud_token_file)[0] if args.cloud_token_file else None
    triton = args.cloud_engine == "triton"
    client = (TritonClient if triton else CloudClient)(
        args.cloud,
        model=(args.triton_prefix or manifest.model) if triton else manifest.model,
        bundle_hash=manifest.content_hash,
        timeout_s=args.timeout,
        tls=_tls(args),
        token=token,
    )
    try:
        client.wait_ready(args.timeout)
        if isinstance(client, TritonClient):  # the handshake at start: a stale repository is said at once
            split = manifest.default_split if args.split is None else args.split
            refused = client.verify(split, Codec.parse(args.codec or manifest.split_point(split).codec))
            if refused:
                print(f"edgesplit edge: {refused}; answering locally", file=sys.stderr)
    except EdgeError as err:  # the edge keeps answering: locally, degraded, until the cloud is back
        print(f"edgesplit edge: {err}; answering locally until the cloud is back", file=sys.stderr)
    return client


def with_thresholds(bundle: Bundle, specs: list[str]) -> Bundle:
    """``bundle`` with the exits' thresholds overridden by ``EXIT=VALUE`` specs (an unknown exit lists the valid)."""
    values: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"--threshold {spec!r} is not EXIT=VALUE (e.g. exit0=0.9)")
        bundle.manifest.exit(name.strip())
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--threshold {spec!r}: {value!r} is not a number") from None
    if not values:
        return bundle
    return dataclasses.replace(bundle, manifest=bundle.manifest.with_thresholds(values, {}))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def read_inputs(path: Path) -> tuple[list[str], Any]:
    """Sample names and samples from ``--input``: an ``.npy`` array, one photo, or a directory of photos (sorted);
    photos stay encoded (the runtime decodes them with the bundle's preprocessing)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ValueError(f"--input {path}: no photos there (looked for {', '.join(IMAGE_SUFFIXES)})")
        return [f.name for f in files], [f.read_bytes() for f in files]
    if not path.is_file():
        raise FileNotFoundError(f"--input {path}: no such file or directory")
    if path.suffix.lower() == ".npy":
        x = np.load(path, allow_pickle=False)
        return [str(i) for i in range(len(x))], x
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--input {path}: expected an .npy file, a photo ({', '.join(IMAGE_SUFFIXES)}) or a directory")
    return [path.name], [path.read_bytes()]


def run(args: argparse.Namespace) -> int:
    """Answer every sample; with labels print a summary, else one line per answer. Or serve (``--listen``)."""
    bundle = with_thresholds(Bundle.load(args.bundle), args.threshold)
    manifest = bundle.manifest
    if manifest.preprocessing.get("kind") == "text":
        from edge.textcli import run_text  # the text extra (tokenizers) only for text bundles

        return run_text(args, bundle, lambda: _client(args, manifest))
    if args.text or args.texts:
        raise ValueError(f"--text/--texts take a text bundle; {args.bundle} is not one (give --input or --listen)")
    client = _client(args, manifest)
    split = args.split if args.split is not None else (manifest.default_split if client else len(manifest.segments))
    runtime = _runtime(args, bundle, client, split)
    try:
        return _answer(args, runtime, client)
    finally:
        runtime.close()


def _runtime(args: argparse.Namespace, bundle: Bundle, client: CloudClient | None, split: int) -> EdgeRuntime:
    """The runtime the options ask for; a route the bundle does not have (a split point, codec or bottleneck) is
    a bad option: ``ValueError``, which ``edgesplit`` reports in one line."""
    slowdown, threads = device_emulation(args, bundle.manifest)
    try:
        return EdgeRuntime(
            bundle,
            split=split,
            cloud=client,
            exits=not args.no_exits,
            codec=args.codec,
            threads=threads,
            slowdown=slowdown,
            deadline_ms=args.deadline_ms,
            race=args.race,
            audit=_audit_config(args),
            bottleneck=args.bottleneck,
        )
    except EdgeError as err:
        if client is not None:
            client.close()
        raise ValueError(str(err)) from None


def _answer(args: argparse.Namespace, runtime: EdgeRuntime, client: CloudClient | None) -> int:
    manifest = runtime.manifest
    if args.listen:
        adaptive = _adaptive(args, runtime, client, frames=False) if args.adapt else None
        return _serve(runtime, args.listen, args.metrics, adaptive)
    if args.input is None:
        raise ValueError("give --input NPY (answer a file of samples) or --listen HOST:PORT (serve apps)")
    names, x = read_inputs(args.input)
    labels = np.load(args.labels, allow_pickle=False) if args.labels else None
    if args.adapt:
        return _adapt(args, runtime, client, x, labels)
    if labels is None:
        for i, sample in enumerate(x):
            a = runtime.infer(sample)
            where = a.exit if a.source == "exit" else a.source
            degraded = f"\tdegraded: {a.degraded}" if a.degraded else ""
            print(f"{names[i]}\t{manifest.classes[a.label]}\t{a.confidence:.3f}\t{where}{degraded}")
        return 0
    stats, _ = evaluate(runtime, x, labels)
    summary = stats.to_dict()
    if "audit" in (counters := runtime.stats()):
        summary["audit"] = counters["audit"]
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _audit_config(args: argparse.Namespace) -> AuditConfig | None:
    if args.audit_rate is None:
        if args.adaptive_thresholds:
            raise ValueError("--adaptive-thresholds needs --audit-rate (e.g. 0.05): the evidence comes from audits")
        return None
    return AuditConfig(
        rate=args.audit_rate, max_rps=args.audit_max_rps, adaptive=args.adaptive_thresholds, window=args.audit_window
    )


def device_emulation(args: argparse.Namespace, manifest: Manifest) -> tuple[float, int]:
    """(slowdown, threads): --emulate-slowdown on one thread, or for --device the factor and thread count the
    manifest's profile recorded."""
    if args.device is None:
        return float(args.emulate_slowdown), 1
    if args.emulate_slowdown != 1:
        raise ValueError("give --device or --emulate-slowdown, not both")
    return manifest_factor(manifest.profile, args.device), int(manifest.profile["device"]["threads"])


def _adapt(
    args: argparse.Namespace, runtime: EdgeRuntime, client: CloudClient | None, x: Any, labels: np.ndarray | None
) -> int:
    adaptive = _adaptive(args, runtime, client)
    stats = evaluate(adaptive, x, labels)[0] if labels is not None else None
    if stats is None:
        for sample in x:
            adaptive.infer(sample)
    print(json.dumps({"stats": stats.to_dict() if stats else None, "adaptation": adaptive.status()}, indent=2))
    return 0


def _adaptive(
    args: argparse.Namespace, runtime: EdgeRuntime, client: CloudClient | None, frames: bool = True
) -> AdaptiveEdge:
    """``frames=False``: the samples reach the runtime as model-ready tensors (the server preprocesses them), so
    the plan leaves out the routes that send the frame itself (jpeg/png at split point 0)."""
    if client is None:
        raise ValueError("--adapt needs --cloud: adaptation moves work between the edge and a cloud")
    bandwidth, _, rtt = args.adapt.partition("/")
    network = Network(parse_bandwidth(bandwidth), float(rtt or 0))
    costs = cost_model(runtime.manifest)
    return AdaptiveEdge(runtime, client, costs if frames else tensor_routes(costs), network)


def _serve(runtime: EdgeRuntime, address: str, metrics: str | None, adaptive: AdaptiveEdge | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain the requests in flight."""
    server = EdgeServer(runtime, address, adaptive=adaptive)
    port = server.start()
    if metrics:
        metrics_port = MetricsServer(runtime.stats, metrics, runtime.manifest.model).start()
        print(f"edge metrics on http://{metrics.rsplit(':', 1)[0]}:{metrics_port}/metrics", flush=True)
    plan = f", adapting from the plan {adaptive.plan.label}" if adaptive else ""
    print(f"edge serving on {address.rsplit(':', 1)[0]}:{port}{plan}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=5.0))
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(grace=5.0)
    return 0
