"""``edgesplit profile`` on a text bundle: what the planner needs, measured on the bundle's own ONNX files.

A text's cost depends on its length, so every latency is timed at one **typical length**: the calibration split's
median token count (``profile.text.tokens``), on a real calibration text of that length, as the median of ``runs``
calls, batch 1 (the edge answers one text at a time). Bytes are the mean over the calibration texts (they are
linear in the length, so the mean is what a stream of texts sends on average). Written in the image profile's
shape (:mod:`split.profile`), so :func:`edge.planner.cost_model` reads it unchanged:

* per layer (segment) and per exit head: the edge's ms (``--device`` / ``--edge-slowdown`` as for images);
* per split point: each tail's cloud ms (fp32, and fp16 past 0); per codec the bytes of the hidden states and
  the mask (at split 0: the token ids and the mask, what :class:`edge.text.TextRuntime` sends), the edge's encode
  (+ request serialisation), the cloud's parse, the accuracy with exits off and on;
* at split 0 also ``text``: **cloud-only, the text itself sent** (UTF-8, its mean bytes), which skips the edge's
  tokenization (``preprocess_ms``) and pays the cloud's in ``decode_ms``; a planning baseline (the issue's honest
  comparison) that ``edgesplit cloud`` does not serve: it has no tokenizer;
* the exit rates at every split point under the bundle's policy (entropy thresholds, or patience K).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from edge.device import slowed
from edge.patience import patience_layers
from edge.planner import TEXT
from edge.policy import Entropy, softmax
from edge.text import is_text_bundle
from protos import inference_pb2 as pb
from protos.bundle import Bundle, Manifest, write_manifest
from protos.codecs import Codec, encode
from protos.tensors import add_input, add_output, request_inputs
from protos.texttok import TextTokenizer
from split.profile import _device_record, _median_ms, _session

__all__ = ["answer_layers", "profile_text_bundle", "run_text"]


def _request(feeds: dict[str, np.ndarray]) -> bytes:
    request = pb.ModelInferRequest(model_name="m")
    for key, array in feeds.items():
        add_input(request, key, array)
    return request.SerializeToString()


def _wire_feeds(codec: Codec, name: str, x: np.ndarray, mask_name: str, mask: np.ndarray) -> dict[str, np.ndarray]:
    """What the text runtime sends at a split point: the (encoded) tensor and the mask."""
    feeds = encode(codec, name, x) if x.dtype == np.float32 else {name: x}
    feeds[mask_name] = mask
    return feeds


def answer_layers(layer_probs: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Per text the layer (0-based) whose exit answers under the bundle's policy, ``layer_probs`` ``[layers, N, C]``
    (the last layer answers when no exit does)."""
    policy = dict(manifest.preprocessing.get("policy", {}))
    if policy.get("criterion", "entropy") == "patience":
        return patience_layers(layer_probs.argmax(-1), int(policy.get("patience", 2)))
    layers, n = layer_probs.shape[:2]
    answer, open_ = np.full(n, layers - 1), np.ones(n, dtype=bool)
    for e in manifest.exits:
        fire = open_ & (Entropy().score(layer_probs[e.after_segment]) <= e.threshold)
        answer[fire] = e.after_segment
        open_ &= ~fire
    return answer


class _Model:
    """The bundle's sessions, and one text's pass through them."""

    def __init__(self, bundle: Bundle, threads: int) -> None:
        m = bundle.manifest
        self.manifest, self.mask = m, str(m.preprocessing["mask"])
        self.tokenizer = TextTokenizer.load(
            bundle.file(str(m.preprocessing["tokenizer"])), int(m.preprocessing["max_length"])
        )
        self.segments = [_session(str(bundle.file(s.file)), threads) for s in m.segments]
        self.exits = [_session(str(bundle.file(e.file)), threads) for e in m.exits]
        self.tails = {sp.index: {f: _session(str(bundle.file(p)), threads) for f, p in sp.tails.items()}
                      for sp in m.split_points if sp.tails}  # fmt: skip

    def boundaries(self, text: str) -> tuple[list[np.ndarray], np.ndarray]:
        """The tensor at every split point (``[0]``: the token ids; the last: the logits) and the mask."""
        ids, mask = self.tokenizer.encode_one(text)
        out = [ids]
        for k, seg in enumerate(self.segments):
            out.append(seg.run(None, {self.manifest.segments[k].input.name: out[-1], self.mask: mask})[0])
        return out, mask

    def tail_pred(self, split: int, fmt: str, x: np.ndarray, mask: np.ndarray) -> int:
        feed = x.astype(np.float16) if fmt == "fp16" else x
        name = self.manifest.split_point(split).tensor.name
        return int(self.tails[split][fmt].run(None, {name: feed, self.mask: mask})[0].argmax())


def _measure(model: _Model, texts: Sequence[str]) -> dict[str, Any]:
    """Per text: every layer's probabilities, the answer of every split point's tails, the bytes sent."""
    m, n = model.manifest, len(model.segments)
    probs: list[list[np.ndarray]] = []
    preds: dict[tuple[int, str], list[int]] = {}
    sizes: dict[tuple[int, str], list[int]] = {}
    for text in texts:
        bounds, mask = model.boundaries(text)
        heads = [softmax(s.run(None, {s.get_inputs()[0].name: bounds[e.after_segment + 1]})[0])[0]
                 for s, e in zip(model.exits, m.exits, strict=True)]  # fmt: skip
        probs.append([*heads, softmax(bounds[n])[0]])
        for split, tails in model.tails.items():
            for fmt in tails:
                preds.setdefault((split, fmt), []).append(model.tail_pred(split, fmt, bounds[split], mask))
                raw = pb.ModelInferRequest.FromString(
                    _request(
                        _wire_feeds(Codec.parse(fmt), m.split_point(split).tensor.name, bounds[split], model.mask, mask)
                    )
                )
                sizes.setdefault((split, fmt), []).append(sum(len(r) for r in raw.raw_input_contents))
    return {"probs": np.asarray(probs).transpose(1, 0, 2), "preds": preds, "bytes": sizes}


def _typical(model: _Model, texts: Sequence[str]) -> tuple[str, int]:
    """A calibration text of the median token count, and that count."""
    lengths = [model.tokenizer.encode_one(t)[0].shape[1] for t in texts]
    median = int(np.median(lengths))
    return texts[int(np.argmin([abs(k - median) for k in lengths]))], median


def _times(model: _Model, text: str, runs: int, slowdown: float) -> dict[str, Any]:
    m = model.manifest
    bounds, mask = model.boundaries(text)
    seg = []
    for k, session in enumerate(model.segments):
        feeds = {m.segments[k].input.name: bounds[k], model.mask: mask}
        seg.append(_median_ms(partial(slowed(session, slowdown).run, None, feeds), runs))
    ex = {}
    for session, e in zip(model.exits, m.exits, strict=True):
        feeds = {session.get_inputs()[0].name: bounds[e.after_segment + 1]}
        ex[e.name] = _median_ms(partial(slowed(session, slowdown).run, None, feeds), runs)
    cloud: dict[int, dict[str, float]] = {}
    codec_ms: dict[tuple[int, str], tuple[float, float]] = {}
    for split, tails in model.tails.items():
        name = m.split_point(split).tensor.name
        cloud[split] = {}
        for fmt, session in tails.items():
            x = bounds[split].astype(np.float16) if fmt == "fp16" else bounds[split]
            cloud[split][fmt] = _median_ms(partial(session.run, None, {name: x, model.mask: mask}), runs)
            build = partial(_request, _wire_feeds(Codec.parse(fmt), name, bounds[split], model.mask, mask))
            raw = build()
            codec_ms[(split, fmt)] = (_median_ms(build, runs), _median_ms(partial(_parse, raw), runs))
    return {"segment_ms": seg, "exit_ms": ex, "cloud_ms": cloud, "codec_ms": codec_ms}


def _parse(raw: bytes) -> dict[str, np.ndarray]:
    return request_inputs(pb.ModelInferRequest.FromString(raw))


def _cycled_ms(fn: Callable[[str], object], texts: Sequence[str], runs: int) -> float:
    calls = itertools.cycle(texts)
    return _median_ms(lambda: fn(next(calls)), runs)


def _split_cost(
    split: int, measured: dict[str, Any], times: dict[str, Any], y: np.ndarray, cascade: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """One offloading split point's costs (``cascade``: each text's answering layer and the exits' predictions)."""
    layer, exit_preds = cascade
    exited = layer < split
    wire = {}
    for fmt in times["cloud_ms"][split]:
        preds = np.asarray(measured["preds"][(split, fmt)])
        encode_ms, decode_ms = times["codec_ms"][(split, fmt)]
        wire[fmt] = {
            "bytes": float(np.mean(measured["bytes"][(split, fmt)])),
            "encode_ms": encode_ms,
            "decode_ms": decode_ms,
            "accuracy": float((preds == y).mean()),
            "accuracy_exits": float((np.where(exited, exit_preds, preds) == y).mean()),
        }
    return {"cloud_ms": dict(times["cloud_ms"][split]), "wire": wire}


def _text_route(model: _Model, texts: Sequence[str], runs: int, fp32: dict[str, float]) -> dict[str, float]:
    """Split point 0's ``text`` route: the UTF-8 text sent; the cloud parses it and tokenizes (``decode_ms``)."""

    def build(text: str) -> bytes:
        return pb.ModelInferRequest(model_name="m", raw_input_contents=[text.encode()]).SerializeToString()

    def cloud(text: str) -> object:
        return model.tokenizer.encode_one(pb.ModelInferRequest.FromString(build(text)).raw_input_contents[0].decode())

    return {
        "bytes": float(np.mean([len(t.encode()) for t in texts])),
        "encode_ms": _cycled_ms(build, texts, runs),
        "decode_ms": _cycled_ms(cloud, texts, runs),
        "accuracy": fp32["accuracy"],
        "accuracy_exits": fp32["accuracy"],  # no exit before split point 0
    }


def profile_text_bundle(
    bundle: Bundle,
    texts: Sequence[str],
    labels: np.ndarray,
    *,
    runs: int = 30,
    edge_threads: int = 1,
    cloud_threads: int = 1,
    edge_slowdown: float = 1.0,
    device_name: str | None = None,
    host_reference_ms: float | None = None,
) -> Manifest:
    """Measure the text bundle on its calibration texts and labels and write the costs into its manifest (see the
    module docstring); ``device_name``, ``edge_slowdown``, ``host_reference_ms``: as
    :func:`split.profile.profile_bundle`."""
    if not is_text_bundle(bundle):
        raise ValueError(f"bundle {bundle.root} is not a text bundle: profile it with split.profile.profile_bundle")
    record = _device_record(device_name, edge_threads, host_reference_ms, edge_slowdown)
    slowdown = record["factor"] if record else edge_slowdown
    model, m, y = _Model(bundle, edge_threads), bundle.manifest, np.asarray(labels)
    n = len(m.segments)
    measured = _measure(model, texts)
    probs = measured["probs"]
    layer = answer_layers(probs, m)
    exit_preds = probs.argmax(-1)[layer, np.arange(len(y))]
    typical, tokens = _typical(model, texts)
    times = _times(model, typical, runs, slowdown)
    cloud_model = _Model(bundle, cloud_threads) if cloud_threads != edge_threads else model
    if cloud_model is not model:
        times["cloud_ms"] = _times(cloud_model, typical, runs, 1.0)["cloud_ms"]
    points = []
    for sp in m.split_points:
        rates = {e.name: float((layer == e.after_segment).mean()) for e in m.exits if e.after_segment < sp.index}
        cost: dict[str, Any] = {"exit_rates": rates, "edge_exit_rate": float(sum(rates.values()))}
        if sp.index == n:
            cost["accuracy_exits"] = float((exit_preds == y).mean())
        else:
            cost.update(_split_cost(sp.index, measured, times, y, (layer, exit_preds)))
        if sp.index == 0:
            cost["wire"][TEXT] = _text_route(model, texts, runs, cost["wire"]["fp32"])
        points.append(replace(sp, cost=cost))
    response = pb.ModelInferResponse(model_name=m.model)
    add_output(response, m.output.name, probs[-1][:1].astype(np.float32))
    profile = {
        "samples": len(y),
        "runs": runs,
        "edge_threads": edge_threads,
        "cloud_threads": cloud_threads,
        "edge_slowdown": slowdown,
        **({"device": record} if record is not None else {}),
        "accuracy_full": float((probs[-1].argmax(-1) == y).mean()),
        "segment_ms": times["segment_ms"],
        "exit_ms": times["exit_ms"],
        "response_bytes": response.ByteSize(),
        "preprocess_ms": _cycled_ms(model.tokenizer.encode_one, texts, runs),
        "text": {
            "tokens": tokens,
            "typical_length": "the calibration split's median token count",
            "text_bytes": float(np.mean([len(t.encode()) for t in texts])),
            "policy": dict(m.preprocessing.get("policy", {})),
        },
    }
    return write_manifest(bundle.root, replace(m, split_points=tuple(points), profile=profile))


def run_text(args: argparse.Namespace, bundle: Bundle) -> int:
    """``edgesplit profile --bundle TEXTBUNDLE --data FILE.csv|FILE.jsonl``: its calibration split (the same
    seeded split the export made), profiled; prints the costs."""
    from split.textdata import load_text_file

    if args.data is None or args.data.suffix not in (".csv", ".jsonl"):
        raise ValueError(
            f"{args.bundle} is a text bundle: profile it on the texts it was exported from, --data FILE.csv|FILE.jsonl"
            " (its calibration split)"
        )
    data = load_text_file(args.data)
    if data.classes != bundle.manifest.classes:
        raise ValueError(
            f"--data {args.data} has classes {list(data.classes)}; the bundle's: {list(bundle.manifest.classes)}"
        )
    m = profile_text_bundle(
        bundle, data.cal[0], data.cal[1], runs=args.runs, edge_threads=args.edge_threads,
        cloud_threads=args.cloud_threads, edge_slowdown=args.edge_slowdown, device_name=args.device,
    )  # fmt: skip
    p = m.profile
    print(f"{m.model}: {p['samples']} calibration texts; timed at {p['text']['tokens']} tokens (their median)")
    print("edge layers ms: " + ", ".join(f"{v:.3f}" for v in p["segment_ms"]))
    print(f"edge tokenization ms: {p['preprocess_ms']:.3f}")
    for sp in m.split_points:
        for codec, w in (sp.cost or {}).get("wire", {}).items():
            print(f"split {sp.index} {codec:<5} {w['bytes']:>8.0f} B  accuracy {100 * w['accuracy']:.2f}%"
                  f" (exits {100 * w['accuracy_exits']:.2f}%)")  # fmt: skip
    print(f"\nwrote {args.bundle / 'manifest.json'}")
    return 0
