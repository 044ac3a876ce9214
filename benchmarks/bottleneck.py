"""``edgesplit bench bottleneck``: learned bottlenecks at the split of the pretrained 224-px MobileNetV2 (issue 18).

The bottleneck section of ``bench accuracy --pretrained``, run on its own (the whole accuracy run takes ~50 min on
two cores; this one reuses ``bench network --pretrained``'s transferred model and bundle from the cache). Per
bottleneck (``--bottleneck SPLIT:CHANNELS[:STRIDE]``, trained by :mod:`split.bottleneck` on the training photos):

* bytes per offload (the int8 code on the wire, and with zstd) beside the JPEG q90 of the same photos and beside
  the plain int8 split tensor at the same split point;
* the hybrid's accuracy (every test photo offloaded through the bottleneck; exits off) against the full model's,
  and the plain int8 split's;
* the edge's compute before the split: its share of the backbone's MACs (a hook-based counter) and ms on a
  device profile (the host's ONNX Runtime median at one thread times the device's emulation factor,
  :mod:`edge.devices`), with the encoder; the extra cloud compute (the bottleneck tail's ms over the plain tail's:
  decoder then the plain fp32 tail, as the cloud runs it, and beside it the fused tail the first bottleneck
  bundles held);
* the training's minutes and the bytes the bottleneck adds to the bundle (its decoders; the fused tails it held
  before, for comparison).

Writes ``DIR/results.json`` and ``DIR/table.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.options import add_budget, add_out, add_training
from benchmarks.transfer import _encoded_bytes, fashion_photos, photo_dataset
from cloud.bottleneck import Session, bottleneck_tail
from edge.devices import device
from protos.bundle import Bundle
from protos.codecs import Codec, encode
from protos.compression import compress
from split import reference
from split.bottleneck import BottleneckConfig, BottleneckSpec
from split.bottleneck_export import add_bottlenecks
from split.chain import chain
from split.partition import ModelConfig, SplitNet
from split.pipeline import BundleConfig, Pretrained, default_cache_dir, make_bundle
from split.profile import _median_ms
from split.train import TrainConfig
from split.wire import write_tail_variant

__all__ = ["add_arguments", "add_bottleneck_training", "count_macs", "run", "with_bottleneck"]

DEFAULT_BOTTLENECKS = ("1:3:2", "1:8:4", "2:4:2")
EPS = 1e-9


def count_macs(net: SplitNet, input_shape: tuple[int, ...]) -> list[float]:
    """Multiply-accumulates per segment of ``net`` for one sample: half the FLOPs that torch's FLOP counter sees
    in the convolutions (transposed ones too) and matrix products, whatever modules call them (a traced segment
    of EfficientNet-Lite0 calls ``conv2d`` itself, with no ``nn.Conv2d`` left to hook)."""
    counts: list[float] = []
    with torch.no_grad():
        h = torch.zeros(1, *input_shape)
        for segment in net.segments:
            with FlopCounterMode(display=False) as counter:
                h = segment(h)
            counts.append(counter.get_total_flops() / 2)
    return counts


def _module_macs(module: nn.Module, shape: tuple[int, ...]) -> float:
    net = SplitNet([module], {}, [])
    return count_macs(net, shape)[0]


def _options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return options


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray, batch: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _offload(tail: Session, name: str, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Every sample sent alone with int8 (per-sample scale): the predictions, mean bytes, mean bytes with zstd."""
    codec = Codec.parse("int8")
    preds, raw, zstd = [], [], []
    for i in range(len(x)):
        wire = encode(codec, name, x[i : i + 1])
        size = sum(a.nbytes for k, a in wire.items() if k != name)
        raw.append(wire[name].nbytes + size)
        zstd.append(len(compress("zstd", wire[name].tobytes())) + size)
        preds.append(int(tail.run(None, wire)[0].argmax(-1)[0]))
    return np.array(preds), float(np.mean(raw)), float(np.mean(zstd))


def _ms(session: ort.InferenceSession, x: np.ndarray, runs: int) -> float:
    return _median_ms(partial(session.run, None, {session.get_inputs()[0].name: x[:1]}), runs)


def _interleaved_ms(fns: list[Callable[[], object]], runs: int, warmup: int = 5) -> list[float]:
    """The median ms of each of ``fns``, timed in turn (one call each, ``runs`` rounds), so that a load that comes
    and goes on the machine weighs on all of them alike."""
    for fn in fns * warmup:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, timed in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            timed.append(time.perf_counter() - start)
    return [float(np.median(t) * 1e3) for t in times]


def _cloud_costs(bundle: Bundle, k: int, code: np.ndarray, tensor: np.ndarray, runs: int) -> dict[str, Any]:
    """What the bottleneck at split point ``k`` adds in the cloud, int8 on the wire: ms over the plain tail's, of
    what the cloud runs (decoder, then the plain fp32 tail) and of the fused tail the first bottleneck bundles held
    (built here, as they did), timed in turn; bytes in the bundle of the decoders and of those fused tails."""
    m = bundle.manifest
    sp, bn = m.split_point(k), m.bottleneck(k)
    assert not bn.fused and sp.tail is not None
    plain_feeds = encode(Codec.parse("int8"), sp.tensor.name, tensor[:1])
    code_feeds = encode(Codec.parse("int8"), bn.code.name, code[:1])
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        parts = [onnx.load(str(bundle.file(f))) for f in (bn.decoders["fp32"], sp.tail)]
        onnx.save(chain(parts), str(fused))
        fused_bytes = fused.stat().st_size
        for fmt in ("fp16", "int8", "int8c"):
            write_tail_variant(fused, fmt, Path(tmp) / f"fused.{fmt}.onnx")
            fused_bytes += (Path(tmp) / f"fused.{fmt}.onnx").stat().st_size
        sessions = [_session(bundle.file(sp.tails["int8"])), bottleneck_tail(bundle, k, "int8", _options()),
                    _session(Path(tmp) / "fused.int8.onnx")]  # fmt: skip
    feeds = [plain_feeds, code_feeds, code_feeds]
    plain_ms, chained_ms, fused_ms = _interleaved_ms(
        [partial(s.run, None, f) for s, f in zip(sessions, feeds, strict=True)], 3 * runs
    )
    return {"cloud_extra_host_ms": chained_ms - plain_ms, "cloud_extra_fused_host_ms": fused_ms - plain_ms,
            "cloud_plain_host_ms": plain_ms, "bundle_bytes_cloud": sum(bundle.file(f).stat().st_size
            for f in bn.decoders.values()), "bundle_bytes_cloud_fused": fused_bytes}  # fmt: skip


def _bundle(args: argparse.Namespace) -> tuple[Bundle, SplitNet, Any]:
    """``bench network --pretrained``'s bundle and net (same configs: one cache)."""
    cache = args.cache_dir or default_cache_dir()
    crops, info = fashion_photos(args.data_dir, args.image_size, args.limit_train, args.limit_cal, 30)
    data = photo_dataset(crops, info, args.family)
    points = tuple(args.split_points) if args.split_points else None
    model = ModelConfig(args.family, 1.0, 3, args.image_size, len(data.classes), points, points and points[:1])
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)
    config = BundleConfig(budget=args.budget / 100, confidence=args.confidence)
    bundle, net = make_bundle(data, model, train, config, cache, pretrained=Pretrained())
    return bundle, net, data


def with_bottleneck(base: Bundle, spec: BottleneckSpec, net: SplitNet, data: Any, args: argparse.Namespace) -> Bundle:
    """A copy of ``base`` with the one bottleneck ``spec`` (a bundle has at most one per split point)."""
    cache = args.cache_dir or default_cache_dir()
    work = cache / "bundles" / f"{base.root.name}-bottleneck-{spec.split}-{spec.channels}-{spec.stride}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base.root, work)
    config = BottleneckConfig(epochs=args.bottleneck_epochs, batch_size=args.bottleneck_batch,
                              max_samples=args.bottleneck_samples)  # fmt: skip
    return add_bottlenecks(Bundle.load(work), net, data.x_train, [spec], config, cache=cache)


def _test(args: argparse.Namespace) -> tuple[Any, np.ndarray, np.ndarray]:
    """The first ``--limit-test`` test photos (the network benchmark's 30 are the first of them), preprocessed,
    their labels and their uint8 crops."""
    crops, info = fashion_photos(args.data_dir, args.image_size, 1, 1, args.limit_test)
    data = photo_dataset(crops, info, args.family)
    return data.x_test[:].astype(np.float32), data.y_test, crops[2:]


def _base(bundle: Bundle, net: SplitNet, x: np.ndarray, runs: int) -> dict[str, Any]:
    """The boundary tensors of ``x``, the MACs and host ms per segment."""
    m = bundle.manifest
    segments = [_session(bundle.file(s.file)) for s in m.segments]
    bounds = [x]
    for s in segments:
        bounds.append(_run(s, bounds[-1]))
    macs = count_macs(net, tuple(m.input.sample_shape))
    return {"bounds": bounds, "macs": macs, "seg_ms": [_ms(s, bounds[i], runs) for i, s in enumerate(segments)]}


def _row(bundle: Bundle, base: dict[str, Any], y: np.ndarray, runs: int, factor: float) -> dict[str, Any]:
    """One bottleneck's figures (the bundle's one bottleneck)."""
    m = bundle.manifest
    bounds, macs, seg_ms = base["bounds"], base["macs"], base["seg_ms"]
    full = bounds[-1].argmax(-1)
    rows = []
    for k in m.bottleneck_splits:
        bn, sp = m.bottleneck(k), m.split_point(k)
        enc = _session(bundle.file(bn.encoder))
        code = _run(enc, bounds[k])
        preds, nbytes, zbytes = _offload(bottleneck_tail(bundle, k, "int8", _options()), bn.code.name, code)
        plain_tail = _session(bundle.file(sp.tails["int8"]))
        plain, plain_bytes, plain_zstd = _offload(plain_tail, sp.tensor.name, bounds[k])
        channels = int(sp.tensor.shape[1])
        spec = BottleneckSpec(k, bn.channels, bn.stride)
        from split.bottleneck import Coder

        coder = Coder(channels, spec)
        enc_macs = _module_macs(coder.encoder, sp.tensor.sample_shape)
        dec_macs = _module_macs(coder.decoder, bn.code.sample_shape)
        head_ms = sum(seg_ms[:k])
        enc_ms = _ms(enc, bounds[k], runs)
        rows.append({
            "split": k, "boundary": sp.name, "channels": bn.channels, "stride": bn.stride,
            "code_shape": list(bn.code.sample_shape), "tensor_shape": list(sp.tensor.sample_shape),
            "bytes": nbytes, "bytes_zstd": zbytes, "plain_int8_bytes": plain_bytes, "plain_int8_zstd_bytes": plain_zstd,
            "accuracy": float((preds == y).mean()), "agreement": float((preds == full).mean()),
            "plain_int8_accuracy": float((plain == y).mean()),
            "edge_macs_share": sum(macs[:k]) / sum(macs), "edge_macs_share_with_encoder":
                (sum(macs[:k]) + enc_macs) / sum(macs), "encoder_macs": enc_macs, "decoder_macs": dec_macs,
            "edge_host_ms": head_ms, "encoder_host_ms": enc_ms,
            "edge_device_ms": head_ms * factor, "encoder_device_ms": enc_ms * factor,
            **_cloud_costs(bundle, k, code, bounds[k], runs), "training": dict(bn.training),
            "bundle_bytes_edge": bundle.file(bn.encoder).stat().st_size,
        })  # fmt: skip
    (row,) = rows
    return row


def _factor(bundle: Bundle, name: str) -> float:
    """How many times slower than this host the device is: the factor ``bench network``'s profile of this bundle
    recorded (measured with its segments, one load), else measured now (:mod:`edge.devices`)."""
    profile = device(name)
    recorded = (bundle.manifest.profile or {}).get("device") or {}
    if recorded.get("name") == profile.name and int(recorded.get("threads", 0)) == 1:
        return float(recorded["factor"])
    return float(profile.emulation(1, reference.host_reference_ms(1, key=profile.reference_model))["factor"])


def _table(results: dict[str, Any]) -> str:
    jpeg = results["jpeg90_bytes"]
    lines = [
        f"{results['family']} {results.get('image_size', 224)} px on {results['n_test']} Fashion photos;"
        f" full model {100 * results['accuracy_full']:.2f}%;"
        f" JPEG q90 of the same photos {jpeg:.0f} B; device {results['device']} (x{results['device_factor']:.1f})",
        "| split | code (c×h×w) | bytes | ×JPEG | +zstd | plain int8 B | acc | Δ pt vs full | plain int8 acc |"
        " edge MACs | edge ms | enc ms | cloud +ms (fused) | cloud KB (fused) | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["bottlenecks"]:
        code = "×".join(map(str, r["code_shape"]))
        lines.append(
            f"| {r['split']} ({r['boundary']}) | {code} | {r['bytes']:.0f} | {r['bytes'] / jpeg:.2f} |"
            f" {r['bytes_zstd']:.0f} | {r['plain_int8_bytes']:.0f} | {100 * r['accuracy']:.2f}% |"
            f" {100 * (r['accuracy'] - results['accuracy_full']):+.2f} | {100 * r['plain_int8_accuracy']:.2f}% |"
            f" {100 * r['edge_macs_share']:.1f}% | {r['edge_device_ms']:.1f} | {r['encoder_device_ms']:.2f} |"
            f" {r['cloud_extra_host_ms']:.2f} ({r['cloud_extra_fused_host_ms']:.2f}) |"
            f" {r['bundle_bytes_cloud'] / 1e3:.1f} ({r['bundle_bytes_cloud_fused'] / 1e3:.0f}) |"
            f" {r['training']['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 18's first target: some bottleneck at a split leaving <= 1/4 of the MACs on the device, <= 0.5x the
    JPEG's bytes at <= 1 point loss against the full model (1e-9: a loss of exactly 1.00 point, in floats)."""
    jpeg, full = results["jpeg90_bytes"], results["accuracy_full"]
    ok = [
        f"{r['split']}:{r['channels']}:{r['stride']}"
        for r in results["bottlenecks"]
        if r["edge_macs_share_with_encoder"] <= 0.25 and r["bytes"] <= 0.5 * jpeg and full - r["accuracy"] <= 0.01 + EPS
    ]
    return {"bytes_and_loss_at_quarter_macs": bool(ok), "meeting": ok}


def add_bottleneck_training(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the benchmarks train a bottleneck (``bench network --bottleneck`` reuses ``bench bottleneck``'s)."""
    parser.add_argument("--bottleneck-epochs", type=int, default=5, help="(default %(default)s)")
    parser.add_argument("--bottleneck-samples", type=int, default=1000, help="training photos (default %(default)s)")
    parser.add_argument("--bottleneck-batch", type=int, default=16, help="(default %(default)s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench bottleneck``."""
    add_out(parser)
    add_training(parser)
    add_budget(parser)
    parser.add_argument("--family", default="mobilenet_v2", choices=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--bottleneck", nargs="+", default=list(DEFAULT_BOTTLENECKS), metavar="SPLIT:C[:STRIDE]")
    add_bottleneck_training(parser)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--limit-train", type=int, default=2000, help="training photos (default %(default)s)")
    parser.add_argument("--limit-cal", type=int, default=400, help="calibration photos (default %(default)s)")
    parser.add_argument("--limit-test", type=int, default=1000, help="test photos (default %(default)s)")
    parser.add_argument("--device", default="rpi4", help="the device profile of the edge ms (default %(default)s)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per graph (default %(default)s)")
    parser.add_argument(
        "--split-points",
        nargs="+",
        default=None,
        help="the backbone's split points (default: the family's, bench network's model; others train anew, with"
        " one exit at the first)",
    )
    parser.add_argument(
        "--device-factor",
        type=float,
        default=None,
        help="the device's slowdown over this host (default: what the bundle's profile recorded, else measured)",
    )


def run(args: argparse.Namespace) -> int:
    """Train the bottlenecks, measure them, print the table, write results.json and table.md."""
    started = time.perf_counter()
    specs = [BottleneckSpec.parse(s) for s in args.bottleneck]
    bundle, net, data = _bundle(args)
    x, y, crops = _test(args)
    factor = args.device_factor or _factor(bundle, args.device)
    base = _base(bundle, net, x, args.runs)
    rows = []
    for spec in specs:
        rows.append(_row(with_bottleneck(bundle, spec, net, data, args), base, y, args.runs, factor))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "training"}), file=sys.stderr)
    full_ms = sum(base["seg_ms"])
    results = {"benchmark": "bottleneck", "model": bundle.manifest.model, "family": args.family,
               "image_size": args.image_size, "n_test": len(y),
               "n_train": args.limit_train, "device": device(args.device).name, "device_factor": factor,
               "jpeg90_bytes": _encoded_bytes(crops)["jpeg90"],
               "accuracy_full": float((base["bounds"][-1].argmax(-1) == y).mean()), "backbone_macs": sum(base["macs"]),
               "edge_only_host_ms": full_ms, "edge_only_device_ms": full_ms * factor, "bottlenecks": rows,
               "command": "edgesplit bench bottleneck " + " ".join(sys.argv[3:])}  # fmt: skip
    results["targets"] = _targets(results)
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = _table(results)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    print(f"targets: {results['targets']}; {results['seconds']:.0f} s")
    return 0
