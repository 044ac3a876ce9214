"""What a text bundle costs on a device and on the wire: per-layer latency from its ONNX graphs, the latency of
edge-only / cloud-only / hybrid on a device profile and a network, and the hidden states under each codec."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from edge.text import TextRuntime
from netsim.profiles import Profile
from protos.bundle import Bundle

__all__ = ["codec_fidelity", "layer_ms", "routes"]


def _median_ms(session: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int) -> float:
    session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def layer_ms(bundle: Bundle, length: int, runs: int = 30) -> dict[str, list[float] | float]:
    """Host ms per segment, per exit and for the whole model (tail 0), one thread, batch 1, ``length`` tokens."""
    rt = TextRuntime(bundle)
    m = bundle.manifest
    mask = np.ones((1, length), np.int64)
    x: np.ndarray = np.full((1, length), 5, np.int64)
    seg, ex = [], []
    for k, session in enumerate(rt._segments):
        feeds = {rt._inputs[k]: x, rt.mask_name: mask}
        seg.append(_median_ms(session, feeds, runs))
        x = session.run(None, feeds)[0]
        if k in rt._exits:
            ex.append(_median_ms(rt._exits[k][2], {rt._inputs[k + 1]: x}, runs))
    tail = ort.InferenceSession(str(bundle.file(m.split_point(0).tails["fp32"])), providers=["CPUExecutionProvider"])
    full = _median_ms(tail, {"input_ids": np.full((1, length), 5, np.int64), "attention_mask": mask}, runs)
    return {"segment_ms": seg, "exit_ms": ex, "full_ms": full}


def _transfer_ms(net: Profile, nbytes: float) -> float:
    return net.rtt_ms + nbytes * 8 / (net.bandwidth_mbit * 1e3)


def routes(
    costs: dict[str, Any],
    layer: np.ndarray,
    text_bytes: float,
    hidden_bytes: Sequence[float],
    factor: float,
    net: Profile,
) -> dict[str, Any]:
    """Mean latency per request on the device (host ms x ``factor``) and ``net``: edge-only with exits (``layer``:
    the layer each sample answered at), cloud-only (the text sent; the cloud's compute at host speed) and the hybrid
    at each split point ``s`` (exits before ``s``, the rest sends ``h{s}``: ``hidden_bytes[s - 1]``)."""
    seg = np.asarray(costs["segment_ms"]) * factor
    ex = np.append(np.asarray(costs["exit_ms"]) * factor, 0.0)
    depth = len(seg)
    per_layer = np.cumsum(seg + ex)  # answering at layer k costs layers 0..k and their exits
    edge_ms = float(per_layer[layer].mean())
    cloud_ms = _transfer_ms(net, text_bytes) + float(costs["full_ms"])
    hybrid = {}
    for s in range(1, depth):
        early = layer < s
        local = np.where(early, per_layer[np.minimum(layer, depth - 1)], per_layer[s - 1] - ex[s - 1])
        remote_compute = float(costs["full_ms"]) * (depth - s) / depth
        offload = np.where(early, 0.0, _transfer_ms(net, hidden_bytes[s - 1]) + remote_compute)
        hybrid[s] = {"ms": float((local + offload).mean()), "offloaded": float((~early).mean())}
    best = min(hybrid, key=lambda s: hybrid[s]["ms"])
    return {"edge_ms": edge_ms, "cloud_ms": cloud_ms, "hybrid": hybrid, "best_split": best}


def _quantize(h: np.ndarray, axis: tuple[int, ...] | None) -> tuple[np.ndarray, int]:
    """int8 affine over ``axis`` (None: the whole tensor); the dequantized tensor and the bytes sent."""
    lo = np.minimum(h.min(axis=axis, keepdims=True), 0)
    hi = np.maximum(h.max(axis=axis, keepdims=True), 0)
    scale = np.maximum(hi - lo, 1e-8) / 255
    zero = np.round(-128 - lo / scale)
    q = np.clip(np.round(h / scale + zero), -128, 127)
    return ((q - zero) * scale).astype(np.float32), h.size + 5 * scale.size


def codec_fidelity(bundle: Bundle, texts: Sequence[str], split: int) -> dict[str, dict[str, float]]:
    """Agreement with the fp32 answer and mean bytes per offload of ``h{split}`` (plus the mask) per codec:
    fp32, fp16, int8 per tensor, per token (a scale per position) and per channel (a scale per hidden unit)."""
    rt = TextRuntime(bundle)
    tail = ort.InferenceSession(
        str(bundle.file(bundle.manifest.split_point(split).tails["fp32"])), providers=["CPUExecutionProvider"]
    )
    name = bundle.manifest.split_point(split).tensor.name
    axes: dict[str, tuple[int, ...] | None] = {"int8": None, "int8-token": (0, 2), "int8-channel": (0, 1)}
    agree = {k: 0 for k in ("fp16", *axes)}
    sent = {k: 0.0 for k in ("fp32", "fp16", *axes)}
    for text in texts:
        ids, mask = rt.tokenizer.encode_one(text)
        h = ids
        for k in range(split):  # every layer, no exit: the tensor a request that reached the split sends
            h = rt._segments[k].run(None, {rt._inputs[k]: h, rt.mask_name: mask})[0]
        want = tail.run(None, {name: h, rt.mask_name: mask})[0].argmax()
        sent["fp32"] += h.nbytes + mask.nbytes
        sent["fp16"] += h.nbytes / 2 + mask.nbytes
        agree["fp16"] += int(
            tail.run(None, {name: h.astype(np.float16).astype(np.float32), rt.mask_name: mask})[0].argmax() == want
        )
        for key, axis in axes.items():
            deq, nbytes = _quantize(h, axis)
            sent[key] += nbytes + mask.nbytes
            agree[key] += int(tail.run(None, {name: deq, rt.mask_name: mask})[0].argmax() == want)
    n = len(texts)
    return {k: {"bytes": sent[k] / n, "agreement": 1.0 if k == "fp32" else agree[k] / n} for k in sent}
