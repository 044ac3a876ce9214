"""``edgesplit bench accuracy --pretrained``: the pretrained 224-px backbones transferred, measured like the rest.

There is no labelled natural-image training set here, so the labelled set is Fashion-MNIST made into photos: each
28x28 grey image becomes an RGB frame and goes through the bundle's own preprocessing (resized to
``--image-size``, the family's mean/std). On a subset that fits two cores (``--limit-train``, ``--limit-cal``,
``--limit-test``), per pretrained family (MobileNetV2, EfficientNet-Lite0, published ImageNet weights):

* transfer (:mod:`split.transfer`: linear probe and exits on the frozen backbone), then everything
  :func:`benchmarks.accuracy.bench_family` measures: full accuracy, the hybrid's accuracy and edge exit rate at
  the budget, bytes per offload for every codec at every split point;
* beside those bytes, the same input as a JPEG (quality 90) and a PNG: the 224-px RGB crop a cloud-only app would
  upload, and the 28x28 original;
* the int8 edge against the fp32 one at the middle split: latency at batch 1 and per sample at batch 64 (ONNX
  Runtime, one thread, the two measured in turn), the head's bytes, the hybrid's accuracy.

Writes ``DIR/results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.accuracy import bench_family
from benchmarks.edge import int8_bundle, int8_vs_fp32, latencies, variant_figures
from protos.preprocessing import Preprocessing
from split.data import FASHION_CLASSES, FASHION_MNIST_DIR, IDX_FILES, Dataset, _find_idx, read_idx
from split.models import FAMILIES
from split.partition import ModelConfig
from split.pipeline import BundleConfig, Pretrained, default_cache_dir, make_bundle
from split.preprocess import Cropper
from split.samples import ImageSamples
from split.train import TrainConfig

__all__ = ["PRETRAINED_FAMILIES", "add_arguments", "fashion_photos", "photo_dataset", "run_transfer"]

PRETRAINED_FAMILIES = ("mobilenet_v2", "efficientnet_lite0")


def _crops(images: np.ndarray, spec: Preprocessing, batch: int = 256) -> np.ndarray:
    """Grey uint8 ``[N, 28, 28]`` -> RGB uint8 crops ``[N, crop, crop, 3]`` by the bundle's resize-and-crop."""
    cropper = Cropper(spec)
    out = np.empty((len(images), spec.crop, spec.crop, 3), np.uint8)
    for start in range(0, len(images), batch):
        frames = np.repeat(images[start : start + batch, :, :, None], 3, axis=-1)
        out[start : start + batch] = cropper(frames)
    return out


def fashion_photos(
    data_dir: Path | None, image_size: int, n_train: int, n_cal: int, n_test: int, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fashion-MNIST subsets as RGB crops: ``(crops [train | cal | test], labels and originals per split)``."""
    root = data_dir or FASHION_MNIST_DIR
    arrays = {key: read_idx(_find_idx(root, stem)) for key, stem in IDX_FILES.items()}
    order = np.random.default_rng(seed).permutation(len(arrays["train_images"]))
    cal, train = order[:n_cal], order[n_cal : n_cal + n_train]
    test = np.random.default_rng(seed + 1).permutation(len(arrays["test_images"]))[:n_test]
    originals = np.concatenate([arrays["train_images"][train], arrays["train_images"][cal],
                                arrays["test_images"][test]])  # fmt: skip
    labels = [arrays["train_labels"][train], arrays["train_labels"][cal], arrays["test_labels"][test]]
    geometry = Preprocessing(resize=image_size, crop=image_size)  # the geometry; each family brings its mean/std
    info = {"labels": [y.astype(np.int64) for y in labels], "originals": originals, "sizes": (n_train, n_cal, n_test)}
    return _crops(originals, geometry), info


def photo_dataset(crops: np.ndarray, info: dict[str, Any], family: str) -> Dataset:
    """The crops and labels of :func:`fashion_photos` as a Dataset, normalised as ``family`` expects."""
    base = FAMILIES[family].preprocessing  # type: ignore[attr-defined]
    spec = Preprocessing(resize=crops.shape[1], crop=crops.shape[1], mean=base["mean"], std=base["std"],
                         scale=base["scale"])  # fmt: skip
    n_train, n_cal, _ = info["sizes"]
    bounds = [0, n_train, n_train + n_cal, len(crops)]
    splits = [ImageSamples(crops, spec, np.arange(a, b)) for a, b in pairwise(bounds)]
    y = info["labels"]
    name = f"fashion-mnist-rgb{crops.shape[1]}-{'-'.join(map(str, info['sizes']))}"
    return Dataset(name, FASHION_CLASSES, splits[0], y[0], splits[1], y[1], splits[2], y[2], spec.to_dict(),
                   {"source": "Fashion-MNIST as RGB photos", "fingerprint": name})  # fmt: skip


def _encoded_bytes(images: np.ndarray) -> dict[str, float]:
    """Mean bytes of each image as JPEG (quality 90) and PNG."""
    sizes: dict[str, list[int]] = {"jpeg90": [], "png": []}
    for image in images:
        for fmt, options in (("jpeg90", {"format": "JPEG", "quality": 90}), ("png", {"format": "PNG"})):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, **options)
            sizes[fmt].append(buffer.tell())
    return {k: float(np.mean(v)) for k, v in sizes.items()}


def _edge(family: str, data: Dataset, train: TrainConfig, split: int, args: argparse.Namespace, work: Path) -> dict:
    """fp32 against int8 edge at ``split``: latency (batch 1 and 64), head bytes, hybrid accuracy."""
    config = BundleConfig(budget=args.budget / 100, default_split=split, confidence=args.confidence)
    model = ModelConfig(family, 1.0, 3, data.input_shape[-1], len(data.classes))
    cache = args.cache_dir or default_cache_dir()
    fp32, net = make_bundle(data, model, train, config, cache, work / "fp32", False, pretrained=Pretrained())
    bundles = {"fp32": fp32, "int8": int8_bundle(fp32, work / "int8", net, data, config)}
    timed = latencies(bundles, split, data, args.repeats, args.batch)
    result = {k: variant_figures(b, split, data, args.repeats, timed[k]) for k, b in bundles.items()}
    result["int8_vs_fp32"] = int8_vs_fp32(result["fp32"], result["int8"])
    return result


def _family(family: str, crops: np.ndarray, info: dict[str, Any], args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    data = photo_dataset(crops, info, family)
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)
    cache = args.cache_dir or default_cache_dir()
    measured = bench_family(family, data, train, cache, width=1.0, budget=args.budget / 100,
                            confidence=args.confidence, split=args.split, pretrained=Pretrained()).summary  # fmt: skip
    n_test = info["sizes"][2]
    test_crops = crops[len(crops) - n_test :]
    measured["encoded_input_bytes"] = {"crop_rgb": _encoded_bytes(test_crops),
                                       "original_grey28": _encoded_bytes(info["originals"][-n_test:])}  # fmt: skip
    measured["edge"] = _edge(family, data, train, measured["hybrid"]["split_index"], args, work / family)
    measured["seconds"]["family_total"] = time.perf_counter() - started
    return measured


def _table(families: dict[str, Any]) -> str:
    lines = ["| family | full acc | hybrid acc | edge exit | int8 b=1 | int8 b=64 | int8 bytes | int8 Δacc pt |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in families.items():
        v = r["edge"]["int8_vs_fp32"]
        lines.append(f"| {name} | {100 * r['accuracy_full']:.2f}% | {100 * r['hybrid']['accuracy']:.2f}% |"
                     f" {100 * r['hybrid']['edge_exit_rate']:.1f}% | {v['speedup']:.2f}x | {v['speedup_batch']:.2f}x |"
                     f" {100 * v['bytes_ratio']:.1f}% | {v['hybrid_accuracy_points']:+.2f} |")  # fmt: skip
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``bench accuracy --pretrained`` adds."""
    group = parser.add_argument_group("bench accuracy --pretrained (224-px ImageNet backbones, transferred)")
    group.add_argument("--pretrained", action="store_true", help="measure the pretrained families instead")
    group.add_argument("--image-size", type=int, default=224, help="pixels of the photos (default %(default)s)")
    group.add_argument("--limit-cal", type=int, default=2000, help="calibration samples (default %(default)s)")
    group.add_argument("--limit-test", type=int, default=5000, help="test samples (default %(default)s)")
    group.add_argument("--repeats", type=int, default=300, help="timed edge runs per variant (default %(default)s)")
    group.add_argument("--batch", type=int, default=64, help="burst size for the per-sample batch latency")


def run_transfer(args: argparse.Namespace) -> int:
    """The 224-px run: measure each pretrained family, print the table, write ``results.json``."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    families = [f for f in args.families or () if f in PRETRAINED_FAMILIES] or list(PRETRAINED_FAMILIES)
    sizes = (args.limit_train or 10000, args.limit_cal, args.limit_test)
    crops, info = fashion_photos(args.data_dir, args.image_size, *sizes)
    with tempfile.TemporaryDirectory() as tmp:
        results = {f: _family(f, crops, info, args, Path(tmp)) for f in families}
    report = {
        "benchmark": "accuracy (pretrained, transferred)",
        "dataset": "Fashion-MNIST as 3-channel photos (the labelled set this machine has)",
        "image_size": args.image_size,
        "n_train": sizes[0], "n_cal": sizes[1], "n_test": sizes[2],
        "budget_points": args.budget, "confidence": args.confidence, "epochs": args.epochs,
        "families": results,
        "seconds": time.perf_counter() - started,
        "command": "edgesplit bench accuracy " + " ".join(sys.argv[3:]),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(_table(results))
    print(f"\nwrote {args.out / 'results.json'} in {report['seconds']:.0f}s")
    return 0
