"""``edgesplit profile``: measure a bundle's costs and write them into its manifest, for the planner.

Everything runs in ONNX Runtime on the bundle's own files, warmed up, as the median of ``runs`` calls on one
sample (the edge answers one request at a time):

* per segment and per exit head: edge latency (``--edge-threads``);
* per split point and wire format: the cloud tail's latency (``--cloud-threads``);
* per split point and codec: bytes on the wire, the edge's encode + request serialisation, the cloud's
  request parsing + decompression, and the accuracy on the calibration split with exits off and on;
* given the calibration photos as uint8 RGB frames (an image bundle): the edge's preprocessing of a frame, and at
  split point 0 the image codecs (``jpeg90``, ``png``: :mod:`protos.codecs`) in the same shape as the others:
  bytes (mean over the photos), the edge's encode, the cloud's parse + decode + preprocessing (``decode_ms``)
  and the accuracy. Their ``cloud_ms`` is the fp32 tail's. The encode times cycle through the photos (they
  differ in size and content); the other codecs time the first sample.
* per exit: the exit rate and accuracy as its threshold sweeps, and at every split point the exit rates at the
  calibrated thresholds (what the planner weighs latencies with).

The content hash covers the model files only, so a profiled bundle still matches the one a cloud serves.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cloud.bottleneck import Session, bottleneck_tail
from edge.device import slowed
from edge.devices import DEVICES, device
from edge.policy import confident, criterion, softmax
from protos import inference_pb2 as pb
from protos.bundle import Bundle, Manifest, TensorSpec, write_manifest
from protos.codecs import IMAGE_INPUT, Codec, decode, decode_images, encode
from protos.preprocessing import Preprocessing, Preprocessor, decode_image, frames_of
from protos.tensors import add_input, add_output, request_inputs
from split import reference
from split.datacli import add_data_arguments, load_args_data
from split.samples import Samples

__all__ = ["PROFILED_CODECS", "PROFILED_IMAGE_CODECS", "add_arguments", "calibration_frames", "profile_bundle", "run"]

PROFILED_CODECS = ("fp32", "fp16", "int8", "int8c", "int8+zstd", "int8+lz4")
PROFILED_IMAGE_CODECS = ("jpeg90", "png")
"""Split point 0's image codecs, profiled when the calibration photos are given as frames."""


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _session(path: str | Path, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), _options(threads), providers=["CPUExecutionProvider"])


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _batched(session: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _request(codec: Codec, name: str, x: np.ndarray, boundary: TensorSpec | None = None) -> bytes:
    request = pb.ModelInferRequest(model_name="m")
    for i, (key, array) in enumerate(encode(codec, name, x, boundary).items()):
        add_input(request, key, array, codec.compressor if i == 0 else None)
    return request.SerializeToString()


def _parse(raw: bytes) -> dict[str, np.ndarray]:
    return request_inputs(pb.ModelInferRequest.FromString(raw))


def _wire(codec: Codec, name: str, x: np.ndarray, boundary: TensorSpec | None) -> tuple[np.ndarray, float]:
    """Every sample encoded on its own as the edge sends it: the decoded batch and the mean request bytes."""
    decoded, sizes = np.empty(x.shape, np.float32), []
    for i in range(len(x)):
        request = pb.ModelInferRequest.FromString(_request(codec, name, x[i : i + 1], boundary))
        sizes.append(sum(len(raw) for raw in request.raw_input_contents))
        decoded[i] = decode(codec.format, name, request_inputs(request))[0]
    return decoded, float(np.mean(sizes))


def _sweep(probs: np.ndarray, labels: np.ndarray, crit_name: str, points: int = 21) -> list[list[float]]:
    """[threshold, exit rate, accuracy of the exited] as the threshold sweeps the score quantiles."""
    crit = criterion(crit_name)
    scores = crit.score(probs)
    rows = []
    for q in np.linspace(0, 1, points):
        t = float(np.quantile(scores, q))
        mask = confident(crit, scores, t)
        acc = float((probs[mask].argmax(-1) == labels[mask]).mean()) if mask.any() else 1.0
        rows.append([t, float(mask.mean()), acc])
    return rows


def profile_bundle(
    bundle: Bundle,
    x: Samples,
    y: np.ndarray,
    *,
    runs: int = 50,
    codecs: Sequence[str] = PROFILED_CODECS,
    edge_threads: int = 1,
    cloud_threads: int = 1,
    edge_slowdown: float = 1.0,
    device_name: str | None = None,
    host_reference_ms: float | None = None,
    frames: Sequence[np.ndarray] | None = None,
    image_codecs: Sequence[str] = PROFILED_IMAGE_CODECS,
) -> Manifest:
    """Measure ``bundle`` on samples ``x`` with labels ``y`` (the calibration split) and write the costs.

    ``edge_slowdown`` times the edge's segments and exit heads on an emulated device that many times slower than
    this host (:mod:`edge.device`), as the edge runtime with the same ``slowdown`` runs them (not the encoders
    or the preprocessing: the runtime does not slow those either). ``device_name`` (:mod:`edge.devices`)
    instead sets that factor to the device's published reference latency over this host's
    (``host_reference_ms``, else measured here at ``edge_threads``) and records both in the profile. ``frames``:
    the same calibration samples as the uint8 RGB frames ``[H, W, 3]`` they were made from (in ``y``'s order);
    with them, an image bundle's preprocessing and split point 0's ``image_codecs`` are profiled too.
    """
    record = _device_record(device_name, edge_threads, host_reference_ms, edge_slowdown)
    edge_slowdown = record["factor"] if record else edge_slowdown
    m = bundle.manifest
    n = len(m.segments)
    segments = [_session(bundle.file(s.file), edge_threads) for s in m.segments]
    bounds = [x[:].astype(np.float32)]  # lazy samples: read here, the profile runs on all of them
    for session in segments:
        bounds.append(_batched(session, bounds[-1]))
    final = bounds[-1]
    segment_ms = [
        _median_ms(partial(slowed(s, edge_slowdown).run, None, {m.segments[i].input.name: bounds[i][:1]}), runs)
        for i, s in enumerate(segments)
    ]
    exit_ms, exit_probs, sweeps = {}, {}, {}
    for e in m.exits:
        session = _session(bundle.file(e.file), edge_threads)
        name = session.get_inputs()[0].name
        timed = slowed(session, edge_slowdown)
        exit_ms[e.name] = _median_ms(partial(timed.run, None, {name: bounds[e.after_segment + 1][:1]}), runs)
        exit_probs[e.name] = softmax(_batched(session, bounds[e.after_segment + 1]))
        sweeps[e.name] = _sweep(exit_probs[e.name], y, e.criterion)

    def cascade(split: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Exit predictions (-1: none) and the offloaded mask at ``split``, as the runtime decides."""
        preds, taken, rates = np.full(len(y), -1), np.zeros(len(y), dtype=bool), {}
        for e in m.exits:
            if e.after_segment < split and e.after_segment + 1 < n:
                crit = criterion(e.criterion)
                mask = confident(crit, crit.score(exit_probs[e.name]), e.threshold) & ~taken
                preds = np.where(mask, exit_probs[e.name].argmax(-1), preds)
                taken |= mask
                rates[e.name] = float(mask.mean())
        return preds, ~taken, rates

    split_points = []
    for sp in m.split_points:
        exit_preds, offloaded, rates = cascade(sp.index)
        cost: dict[str, Any] = {"exit_rates": rates, "edge_exit_rate": float(1 - offloaded.mean())}
        if sp.index == n:
            cost["accuracy_exits"] = float((np.where(offloaded, final.argmax(-1), exit_preds) == y).mean())
        else:
            cost["cloud_ms"], cost["wire"] = _split_costs(
                bundle, sp.index, bounds[sp.index], y, exit_preds, offloaded, codecs, runs, cloud_threads
            )
            cost.update(_bottleneck_costs(bundle, sp.index, bounds[sp.index], y, (exit_preds, offloaded), codecs,
                                          runs, (edge_slowdown, edge_threads, cloud_threads)))  # fmt: skip
            if sp.images and frames is not None:
                cost["wire"].update(_image_costs(bundle, frames, y, image_codecs, runs, cloud_threads))
        split_points.append(replace(sp, cost=cost))
    response = pb.ModelInferResponse(model_name=m.model)
    add_output(response, m.output.name, final[:1])
    profile = {
        "samples": len(y),
        "runs": runs,
        "edge_threads": edge_threads,
        "cloud_threads": cloud_threads,
        "edge_slowdown": edge_slowdown,
        **({"device": record} if record is not None else {}),
        "accuracy_full": float((final.argmax(-1) == y).mean()),
        "segment_ms": segment_ms,
        "exit_ms": exit_ms,
        "response_bytes": response.ByteSize(),
        "exit_sweep": sweeps,
    }
    if frames is not None and m.preprocessing.get("kind") == "image":
        profile["preprocess_ms"] = _preprocess_ms(bundle, frames, runs, edge_threads)
    return write_manifest(bundle.root, replace(m, split_points=tuple(split_points), profile=profile))


def _device_record(name: str | None, threads: int, host_ms: float | None, slowdown: float) -> dict[str, Any] | None:
    if name is None:
        return None
    if slowdown != 1:
        raise ValueError("give a device or a slowdown factor, not both: the device's factor is measured")
    profile = device(name)
    profile.reference_ms(threads)  # an unpublished thread count fails before the reference model is timed
    if host_ms is None:
        host_ms = reference.host_reference_ms(threads, key=profile.reference_model)  # exported once, then cached
    return profile.emulation(threads, host_ms)


def _split_costs(
    bundle: Bundle,
    split: int,
    tensor: np.ndarray,
    y: np.ndarray,
    exit_preds: np.ndarray,
    offloaded: np.ndarray,
    codecs: Sequence[str],
    runs: int,
    threads: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    sp = bundle.manifest.split_point(split)
    boundary = bundle.manifest.segments[split].input  # uint8 on an int8 edge
    tails = {fmt: _session(bundle.file(file), threads) for fmt, file in sp.tails.items()}
    return _wire_costs(sp.tensor.name, tails, boundary, tensor, y, (exit_preds, offloaded), codecs, runs)


def _wire_costs(
    name: str,
    tails: Mapping[str, Session],
    boundary: TensorSpec | None,
    tensor: np.ndarray,
    y: np.ndarray,
    cascade: tuple[np.ndarray, np.ndarray],
    codecs: Sequence[str],
    runs: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per tail (wire format) its ms; per codec the bytes, encode and decode ms and accuracy of ``tensor``
    (called ``name``) sent to ``tails`` (sessions); ``cascade``: the exits' predictions and the offloaded mask."""
    exit_preds, offloaded = cascade
    fp32_tail = tails["fp32"]
    cloud_ms = {}
    for fmt, session in tails.items():
        feeds = encode(Codec(fmt), name, tensor[:1], boundary)
        cloud_ms[fmt] = _median_ms(partial(session.run, None, feeds), runs)
    wire = {}
    for codec_name in codecs:
        codec = Codec.parse(codec_name)
        decoded, nbytes = _wire(codec, name, tensor, boundary)
        preds = _batched(fp32_tail, decoded).argmax(-1)
        raw = _request(codec, name, tensor[:1], boundary)
        wire[codec_name] = {
            "bytes": nbytes,
            "encode_ms": _median_ms(partial(_request, codec, name, tensor[:1], boundary), runs),
            "decode_ms": _median_ms(partial(_parse, raw), runs),
            "accuracy": float((preds == y).mean()),
            "accuracy_exits": float((np.where(offloaded, preds, exit_preds) == y).mean()),
        }
    return cloud_ms, wire


def _bottleneck_costs(
    bundle: Bundle,
    split: int,
    tensor: np.ndarray,
    y: np.ndarray,
    cascade: tuple[np.ndarray, np.ndarray],
    codecs: Sequence[str],
    runs: int,
    device: tuple[float, int, int],
) -> dict[str, Any]:
    """``{"bottleneck": costs}`` of the split point's bottleneck ({} without one): its encoder's ms on the
    (emulated) edge, and what :func:`_wire_costs` measures of the code sent to the bottleneck tails (the encoder's
    ms is in each codec's ``encode_ms``). ``device``: the edge's slowdown and threads, the cloud's threads."""
    slowdown, edge_threads, cloud_threads = device
    bn = bundle.manifest.split_point(split).bottleneck
    if bn is None:
        return {}
    encoder = _session(bundle.file(bn.encoder), edge_threads)
    feed = bundle.manifest.split_point(split).tensor.name
    code = _batched(encoder, tensor)
    encoder_ms = _median_ms(partial(slowed(encoder, slowdown).run, None, {feed: tensor[:1]}), runs)
    options = _options(cloud_threads)
    plain = _session(bundle.file(bundle.manifest.split_point(split).tails["fp32"]), cloud_threads)
    tails = {fmt: bottleneck_tail(bundle, split, fmt, options, plain) for fmt in bn.files}  # what the cloud runs
    cloud_ms, wire = _wire_costs(bn.code.name, tails, None, code, y, cascade, codecs, runs)
    for w in wire.values():
        w["encode_ms"] += encoder_ms
    return {"bottleneck": {"encoder_ms": encoder_ms, "cloud_ms": cloud_ms, "wire": wire}}


def _cycled_ms(fn: Callable[[int], object], count: int, runs: int) -> float:
    """The median ms of ``fn(i)`` over ``runs`` calls, ``i`` cycling through ``0..count-1`` (warmed up)."""
    calls = itertools.count()
    return _median_ms(lambda: fn(next(calls) % count), runs)


def _preprocess_ms(bundle: Bundle, frames: Sequence[np.ndarray], runs: int, threads: int) -> float:
    """The edge's preprocessing of one frame (the bundle's graph), median over the photos."""
    pre = Preprocessor.load(bundle, threads)
    assert pre is not None  # an image bundle
    return _cycled_ms(lambda i: pre(frames[i]), len(frames), runs)


def _image_costs(
    bundle: Bundle, frames: Sequence[np.ndarray], y: np.ndarray, codecs: Sequence[str], runs: int, threads: int
) -> dict[str, dict[str, float]]:
    """Split point 0's image codecs: each frame encoded as the edge sends it, decoded and preprocessed as the
    cloud does, run by the fp32 tail."""
    sp = bundle.manifest.split_point(0)
    pre, tail = Preprocessor.load(bundle, threads), _session(bundle.file(sp.tails["fp32"]), threads)
    assert pre is not None  # the manifest allows images only with preprocessing
    if len(frames) != len(y):
        raise ValueError(f"{len(frames)} frames for {len(y)} calibration samples: give one frame per sample")

    def edge(codec: Codec, i: int) -> bytes:
        return _request(codec, IMAGE_INPUT, frames_of(frames[i]))

    def cloud(codec: Codec, raws: list[bytes], i: int) -> np.ndarray:
        return pre(decode_images(_parse(raws[i]), codec)[0])

    wire = {}
    for name in codecs:
        codec = Codec.parse(name)
        if not codec.image or codec.format not in sp.images:
            raise ValueError(f"{name!r} is not an image codec of split point 0; it takes {list(sp.images)}")
        raws = [edge(codec, i) for i in range(len(frames))]
        sizes = [sum(len(r) for r in pb.ModelInferRequest.FromString(raw).raw_input_contents) for raw in raws]
        preds = _batched(tail, np.concatenate([cloud(codec, raws, i) for i in range(len(raws))])).argmax(-1)
        accuracy = float((preds == y).mean())
        wire[codec.name] = {
            "bytes": float(np.mean(sizes)),
            "encode_ms": _cycled_ms(partial(edge, codec), len(frames), runs),
            "decode_ms": _cycled_ms(partial(cloud, codec, raws), len(raws), runs),
            "accuracy": accuracy,
            "accuracy_exits": accuracy,  # no exit before split point 0
        }
    return wire


def calibration_frames(data_root: Path | None, x: Samples) -> list[np.ndarray] | None:
    """The calibration photos as uint8 RGB frames, read again from ``--data``'s folder (their files are named
    in the samples); None when they cannot be (a built-in set, an .npz)."""
    files = [x.file(i) for i in range(len(x))] if hasattr(x, "file") else []
    if data_root is None or not data_root.is_dir() or not files or None in files:
        return None
    return [decode_image((data_root / str(f)).read_bytes(), str(f)) for f in files]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="the bundle to profile (in place)")
    add_data_arguments(parser, image_size=False)  # its calibration split; --data images: the bundle's preprocessing
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="--data: the crop cache (default: $EDGESPLIT_CACHE)"
    )
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement (median)")
    parser.add_argument(
        "--image-codecs",
        nargs="*",
        default=list(PROFILED_IMAGE_CODECS),
        metavar="CODEC",
        help="split point 0 of an image bundle: the image codecs to profile (png, jpeg<Q>; default %(default)s)",
    )
    parser.add_argument("--edge-threads", type=int, default=1)
    parser.add_argument("--cloud-threads", type=int, default=1)
    parser.add_argument(
        "--edge-slowdown",
        type=float,
        default=1.0,
        help="time the edge as a device this many times slower than this host (edge.device; default 1: the host)",
    )
    parser.add_argument(
        "--device",
        metavar="NAME",
        help=f"time the edge as a named device ({', '.join(DEVICES)}): the factor is its published latency of a"
        " reference model over this host's (edge.devices)",
    )


def run(args: argparse.Namespace) -> int:
    """Profile the bundle, write the manifest, print the costs."""
    bundle = Bundle.load(args.bundle)
    if bundle.manifest.preprocessing.get("kind") == "text":
        from split.textprofile import run_text

        return run_text(args, bundle)
    if args.device is not None:
        device(args.device).reference_ms(args.edge_threads)  # a bad name or thread count fails before the data loads
    data = load_args_data(args, Preprocessing.from_manifest(bundle.manifest.preprocessing))
    frames = calibration_frames(args.data, data.x_cal) if bundle.manifest.split_points[0].images else None
    if bundle.manifest.split_points[0].images and frames is None:
        print("split point 0's image codecs are not profiled: they need the photos (--data FOLDER)")
    m = profile_bundle(
        bundle,
        data.x_cal,
        data.y_cal,
        runs=args.runs,
        edge_threads=args.edge_threads,
        cloud_threads=args.cloud_threads,
        edge_slowdown=args.edge_slowdown,
        device_name=args.device,
        frames=frames,
        image_codecs=args.image_codecs,
    )
    p = m.profile
    slow = f", edge emulated {p['edge_slowdown']:g}x slower than this host" if p["edge_slowdown"] != 1 else ""
    if "device" in p:
        d = p["device"]
        slow = (
            f", edge emulated as {d['name']}: {d['device_ms']:g} ms published / {d['host_ms']:.2f} ms here for"
            f" the reference model at {d['threads']} thread(s) = {d['factor']:.2f}x"
        )
    print(f"{m.model}: {p['samples']} calibration samples, median of {p['runs']} runs{slow}")
    if "preprocess_ms" in p:
        print(f"edge preprocessing ms: {p['preprocess_ms']:.3f}")
    print("edge segments ms: " + ", ".join(f"{v:.3f}" for v in p["segment_ms"]))
    print("edge exits ms:    " + ", ".join(f"{k} {v:.3f}" for k, v in p["exit_ms"].items()))
    head = f"{'split':>5} {'codec':<10} {'bytes':>8} {'enc ms':>7} {'dec ms':>7} {'tail ms':>8} {'acc':>7}"
    print(f"\n{head} {'acc+exits':>9}")
    for sp in m.split_points:
        for codec, w in (sp.cost or {}).get("wire", {}).items():
            tail = sp.cost["cloud_ms"][Codec.parse(codec).tail]  # type: ignore[index]
            print(
                f"{sp.index:>5} {codec:<10} {w['bytes']:>8.0f} {w['encode_ms']:>7.3f} {w['decode_ms']:>7.3f}"
                f" {tail:>8.3f} {100 * w['accuracy']:>6.2f}% {100 * w['accuracy_exits']:>8.2f}%"
            )
    print(f"\nwrote {args.bundle / 'manifest.json'}")
    return 0
