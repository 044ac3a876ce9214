"""``edgesplit bench photos --out DIR``: pretrained ImageNet networks on real photos, through the bundle, every split.

For MobileNetV2 and EfficientNet-Lite0 with their published weights, on foolbox's 20 ImageNet validation JPEGs
(the label in each file name), top-1 and top-5 of:

* the PyTorch model, fed the bundle's own preprocessing of each photo (the same arithmetic as training);
* the bundle run by a real :class:`~edge.runtime.EdgeRuntime` from the encoded JPEG, at every split point, with
  the ``fp32`` and the ``int8`` wire codec, against a real in-process ``edgesplit cloud`` over gRPC;
* the int8 edge (static QDQ segments) at every split point. Its activation ranges need calibration images and
  there is no other ImageNet data here: each half of the photos is calibrated on the other half, so no photo is
  scored by a graph calibrated on it (no labels are used for calibration).

Writes ``DIR/results.json``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.options import add_out
from cloud.server import CloudConfig, CloudServer
from edge.client import CloudClient
from edge.inputs import Inputs
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle, write_manifest
from protos.preprocessing import Preprocessing
from split.export import export_bundle
from split.models import FAMILIES
from split.partition import ModelConfig, build_splitnet
from split.photos import imagenet_photos
from split.pretrained import load_pretrained
from split.quantize import quantized_copy

__all__ = ["PRETRAINED_FAMILIES", "add_arguments", "bench_photos", "run"]

PRETRAINED_FAMILIES = ("mobilenet_v2", "efficientnet_lite0")
_IMAGENET = tuple(str(i) for i in range(1000))


def _topk(probs: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    order = np.argsort(-probs, axis=1)
    return {"top1": int((order[:, 0] == labels).sum()), "top5": int((order[:, :5] == labels[:, None]).any(1).sum())}


def _export(family: str, out: Path) -> Bundle:
    module = load_pretrained(family)
    config = ModelConfig(family, width=1.0, in_channels=3, image_size=224, num_classes=1000, exits=())
    net = build_splitnet(config, module)
    spec = Preprocessing(**FAMILIES[family].preprocessing)  # type: ignore[attr-defined]
    export_bundle(net, config, out, model_name=f"{family}_imagenet", classes=_IMAGENET, default_split=1,
                  preprocessing=spec.to_dict())  # fmt: skip
    return Bundle.load(out)


def _int8(fp32: Bundle, out: Path, calibration: np.ndarray) -> Bundle:
    """What ``export_bundle(edge_precision="int8")`` writes, without exporting again: ``fp32`` copied to ``out``,
    its edge quantized, calibrated on ``calibration``."""
    write_manifest(out, quantized_copy(fp32.root, fp32.manifest, out, calibration))
    return Bundle.load(out)


def _edge_probs(bundle: Bundle, images: list[bytes], target: str, split: int, codec: str) -> np.ndarray:
    m = bundle.manifest
    n = len(m.segments)
    client = None if split == n else CloudClient(target, model=m.model, bundle_hash=m.content_hash, timeout_s=60)
    try:
        runtime = EdgeRuntime(bundle, split=split, cloud=client, exits=False, codec=codec, deadline_ms=60_000)
        answers = [runtime.infer(image) for image in images]
    finally:
        if client is not None:
            client.close()
    assert all(a.degraded is None for a in answers), [a.degraded for a in answers]
    return np.stack([a.probabilities for a in answers])


def _served(bundle: Bundle, images: list[bytes], labels: np.ndarray, codecs: tuple[str, ...]) -> dict[str, Any]:
    """Top-k of the edge runtime at every split point and codec, against a real cloud serving ``bundle``."""
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=2))
    target = f"127.0.0.1:{server.start()}"
    try:
        rows: dict[str, Any] = {}
        for split in bundle.manifest.split_indices:
            for codec in codecs if split < len(bundle.manifest.segments) else ("-",):
                probs = _edge_probs(bundle, images, target, split, "fp32" if codec == "-" else codec)
                rows[f"split{split}/{codec}"] = _topk(probs, labels)
        return rows
    finally:
        server.stop(grace=1.0)


def bench_photos(family: str, workdir: Path) -> dict[str, Any]:
    """Every measurement of the module docstring for one pretrained family."""
    photos = imagenet_photos()
    images = [p.read_bytes() for p, _ in photos]
    labels = np.asarray([label for _, label in photos])
    start = time.perf_counter()
    bundle = _export(family, workdir / "fp32")
    x = Inputs.load(bundle).batch(images)
    with torch.no_grad():
        torch_probs = torch.softmax(load_pretrained(family)(torch.from_numpy(x)), -1).numpy()
    result: dict[str, Any] = {"n": len(images), "torch": _topk(torch_probs, labels)}
    result["bundle"] = _served(bundle, images, labels, ("fp32", "int8"))
    halves = [np.arange(len(images)) % 2 == k for k in (0, 1)]
    int8: dict[str, dict[str, int]] = {}
    for k, scored in enumerate(halves):
        b8 = _int8(bundle, workdir / f"int8-{k}", x[~scored])
        part = _served(b8, [im for im, s in zip(images, scored, strict=True) if s], labels[scored], ("int8",))
        for key, counts in part.items():
            int8[key] = {t: int8.get(key, {}).get(t, 0) + c for t, c in counts.items()}
    result["int8_edge"] = int8
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _table(results: dict[str, Any]) -> str:
    lines = ["| family | path | top-1 | top-5 |", "|---|---|---|---|"]
    for family, r in results.items():
        n = r["n"]
        lines.append(f"| {family} | torch | {r['torch']['top1']}/{n} | {r['torch']['top5']}/{n} |")
        for part in ("bundle", "int8_edge"):
            for key, c in r[part].items():
                lines.append(f"| {family} | {part} {key} | {c['top1']}/{n} | {c['top5']}/{n} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench photos``."""
    add_out(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write ``results.json``."""
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        results = {f: bench_photos(f, Path(tmp) / f) for f in PRETRAINED_FAMILIES}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    return 0
