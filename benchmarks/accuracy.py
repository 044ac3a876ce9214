"""``edgesplit bench accuracy``: accuracy vs. where the work happens vs. bytes on the wire, per model family.

For each family on Fashion-MNIST: train (cached), calibrate the exits before a mid-network split on the
calibration split within the accuracy budget, and report on the test split as it comes out:

* the full model's accuracy, the calibrated hybrid's accuracy and its edge exit rate;
* per exit, accuracy vs. the fraction of samples exited as its threshold sweeps (that exit alone + the final);
* per split point and codec, the hybrid's accuracy and the mean bytes per offload. Each offloaded sample is
  encoded on its own, as the edge sends it (:func:`protos.codecs.encode`, then the compressor), decoded as the
  tail does (:func:`protos.codecs.decode`) and finished by the PyTorch tail.

Writes ``DIR/results.json``, ``DIR/exits.png`` and ``DIR/codecs.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.options import add_budget, add_out, add_training
from edge.policy import Criterion, confident, criterion, softmax
from protos.codecs import Codec, decode, encode
from protos.compression import compress
from split.calibrate import calibrate, cascade
from split.data import Dataset, load_fashion_mnist
from split.partition import ModelConfig, SplitNet
from split.pipeline import Pretrained, default_cache_dir, trained_model
from split.samples import as_array
from split.train import TrainConfig

__all__ = ["CODECS", "SIZES", "FamilyResult", "add_arguments", "bench_family", "run"]

CODECS = ("fp32", "fp16", "int8", "int8c", "int8+zstd", "int8+lz4", "fp16+zstd")
"""The codecs measured at every split point."""

SIZES: dict[str, dict[str, float]] = {
    "mobilenetv2": {"width": 1.0},
    "resnet": {"width": 0.5},
    "squeezenet": {"width": 0.5},
}
"""Per-family sizes for 28x28 inputs: small enough that all three train in well under an hour on two cores."""


@dataclass(frozen=True)
class _Pass:
    """One forward pass over a split: the tensor at every boundary, the final logits and every exit's."""

    boundaries: list[np.ndarray]
    final: np.ndarray
    exits: list[np.ndarray]


@torch.no_grad()
def _forward(net: SplitNet, x: np.ndarray, batch: int = 500) -> _Pass:
    net.eval()
    heads = dict(zip(net.exit_positions, net.exits, strict=True))
    bounds: list[list[np.ndarray]] = [[] for _ in range(len(net.segments) + 1)]
    exits: list[list[np.ndarray]] = [[] for _ in net.exits]
    for start in range(0, len(x), batch):
        t = torch.from_numpy(x[start : start + batch])
        bounds[0].append(t.numpy())
        for i, segment in enumerate(net.segments):
            t = segment(t)
            bounds[i + 1].append(t.numpy())
            if i in heads:
                exits[net.exit_positions.index(i)].append(heads[i](t).numpy())
    joined = [np.concatenate(b) for b in bounds]
    return _Pass(joined, joined[-1], [np.concatenate(e) for e in exits])


@torch.no_grad()
def _tail(net: SplitNet, split: int, x: np.ndarray, batch: int = 500) -> np.ndarray:
    outs = []
    for start in range(0, len(x), batch):
        t = torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))
        for segment in list(net.segments)[split:]:
            t = segment(t)
        outs.append(t.numpy())
    return np.concatenate(outs)


def _wire(codec: Codec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, as the edge sends it: the decoded tensors and the bytes on the wire."""
    decoded = np.empty_like(x)
    sizes = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        tensors = encode(codec, "b", x[i : i + 1])
        main = np.ascontiguousarray(tensors["b"])
        size = len(compress(codec.compressor, main.data.cast("B"))) if codec.compressor else main.nbytes
        sizes[i] = size + sum(t.nbytes for k, t in tensors.items() if k != "b")
        decoded[i] = decode(codec.format, "b", tensors)[0]
    return decoded, sizes


def _key(codec: str) -> str:
    return codec.replace("+", "_")


@dataclass(frozen=True)
class FamilyResult:
    """One family's figures (``summary`` goes into results.json) and the curves for the plots."""

    summary: dict[str, Any]
    sweeps: dict[str, list[tuple[float, float]]]
    codec_points: dict[str, dict[str, tuple[float, float]]]


def _sweep(final: np.ndarray, probs: np.ndarray, crit: Criterion, y: np.ndarray) -> list[tuple[float, float]]:
    """(fraction exited, accuracy) as this exit's threshold sweeps, the final classifier answering the rest."""
    scores = crit.score(probs)
    points = []
    for q in np.linspace(0, 1, 41):
        t = float(np.quantile(scores, 1 - q if crit.higher_is_confident else q))
        mask = confident(crit, scores, t)
        preds = np.where(mask, probs.argmax(-1), final.argmax(-1))
        points.append((float(mask.mean()), float((preds == y).mean())))
    return points


def bench_family(
    family: str,
    data: Dataset,
    train: TrainConfig,
    cache: Path,
    *,
    width: float,
    budget: float = 0.01,
    confidence: float = 0.95,
    criterion_name: str = "max_softmax",
    split: int | None = None,
    codecs: Sequence[str] = CODECS,
    progress: bool = True,
    pretrained: Pretrained | None = None,
) -> FamilyResult:
    """Train (or load; with ``pretrained``, transfer) ``family`` on ``data`` and measure it; ``split`` defaults to
    the middle split point."""
    started = time.perf_counter()
    model = ModelConfig(family, width=width, in_channels=data.input_shape[0], image_size=data.input_shape[-1],
                        num_classes=len(data.classes))  # fmt: skip
    net, cached = trained_model(data, model, train, cache, progress, pretrained=pretrained)
    trained_s = time.perf_counter() - started
    crit = criterion(criterion_name)
    cal, test = _forward(net, as_array(data.x_cal)), _forward(net, as_array(data.x_test))
    n = len(net.segments)
    mid = n // 2 if split is None else split
    if not 1 <= mid < n:
        raise ValueError(f"split must be in 1..{n - 1} (a split that offloads after some edge work), got {mid}")
    names = [f"exit{k}" for k in range(len(net.exits))]
    y = data.y_test
    final_probs = softmax(test.final)
    accuracy_full = float((test.final.argmax(-1) == y).mean())

    by_split: dict[str, Any] = {}
    codec_points: dict[str, dict[str, tuple[float, float]]] = {c: {} for c in codecs}
    hybrid: dict[str, Any] = {}
    for s in range(1, n):
        used = [k for k, pos in enumerate(net.exit_positions) if pos < s]
        calibration = calibrate(
            data.y_cal,
            softmax(cal.final),
            [softmax(cal.exits[k]) for k in used],
            [crit] * len(used),
            [names[k] for k in used],
            budget,
            confidence,
        )
        thresholds = [calibration.thresholds[names[k]] for k in used]
        exit_probs = [softmax(test.exits[k]) for k in used]
        _, taken = cascade(final_probs, exit_probs, [crit] * len(used), thresholds)
        offloaded = taken == len(used)
        exit_preds = np.full(len(y), -1)
        for j, k in enumerate(used):
            exit_preds = np.where(taken == j, test.exits[k].argmax(-1), exit_preds)
        name = net.boundary_names[s - 1]
        entry: dict[str, Any] = {
            "index": s,
            "shape": list(test.boundaries[s].shape[1:]),
            "edge_exit_rate": float(1 - offloaded.mean()),
            "exit_rate": {names[k]: float((taken == j).mean()) for j, k in enumerate(used)},
            "thresholds": dict(calibration.thresholds),
            "calibration": {"accuracy_full": calibration.accuracy_full, "accuracy_hybrid": calibration.accuracy_hybrid},
            "bytes": {},
            "accuracy_by_codec": {},
        }
        sample = offloaded if offloaded.any() else np.ones(len(y), dtype=bool)
        for name_c in codecs:
            codec = Codec.parse(name_c)
            decoded, sizes = _wire(codec, test.boundaries[s][sample])
            tail_preds = np.full(len(y), -1)
            tail_preds[sample] = _tail(net, s, decoded).argmax(-1)
            preds = np.where(offloaded, tail_preds, exit_preds)
            accuracy = float((preds == y).mean())
            entry["bytes"][_key(name_c)] = float(sizes.mean())
            entry["accuracy_by_codec"][_key(name_c)] = accuracy
            codec_points[name_c][name] = (float(sizes.mean()), accuracy)
        entry["accuracy"] = entry["accuracy_by_codec"]["fp32"]
        by_split[name] = entry
        if s == mid:
            hybrid = {
                "split": name,
                "split_index": s,
                "accuracy": entry["accuracy"],
                "edge_exit_rate": entry["edge_exit_rate"],
                "exit_rate": entry["exit_rate"],
                "loss_points": 100 * (accuracy_full - entry["accuracy"]),
            }
    mid_entry = by_split[net.boundary_names[mid - 1]]
    fp32 = mid_entry["bytes"]["fp32"]
    summary = {
        "model": {"family": family, "width": width, "parameters": sum(p.numel() for p in net.segments.parameters())},
        "accuracy_full": accuracy_full,
        "exits": {
            names[k]: {
                "boundary": net.boundary_names[pos],
                "accuracy": float((test.exits[k].argmax(-1) == y).mean()),
            }
            for k, pos in enumerate(net.exit_positions)
        },
        "hybrid": hybrid,
        "bytes": mid_entry["bytes"],
        "accuracy_by_codec": mid_entry["accuracy_by_codec"],
        "bytes_ratio_vs_fp32": {k: v / fp32 for k, v in mid_entry["bytes"].items()},
        "int8_extra_loss_points": 100
        * (mid_entry["accuracy_by_codec"]["fp32"] - mid_entry["accuracy_by_codec"]["int8"]),
        "by_split": by_split,
        "cached_model": cached,
        "seconds": {"train_or_load": trained_s, "total": time.perf_counter() - started},
    }
    sweeps = {names[k]: _sweep(final_probs, softmax(test.exits[k]), crit, y) for k in range(len(net.exits))}
    return FamilyResult(summary, sweeps, codec_points)


def plot(results: dict[str, FamilyResult], out: Path) -> list[Path]:
    """``exits.png`` and ``codecs.png`` under ``out``, one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = []
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (family, r) in zip(axes[0], results.items(), strict=True):
        for exit_name, points in r.sweeps.items():
            xs, ys = zip(*points, strict=True)
            boundary = r.summary["exits"][exit_name]["boundary"]
            ax.plot(xs, [100 * v for v in ys], marker=".", label=f"{exit_name} ({boundary})")
        h = r.summary["hybrid"]
        ax.scatter(
            [h["edge_exit_rate"]],
            [100 * h["accuracy"]],
            color="black",
            zorder=5,
            label=f"calibrated, split {h['split']}",
        )
        ax.axhline(100 * r.summary["accuracy_full"], color="grey", linestyle="--", label="full model")
        ax.set(title=family, xlabel="fraction of test samples exited on the edge", ylabel="top-1 accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "exits.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (family, r) in zip(axes[0], results.items(), strict=True):
        for codec, by_split in r.codec_points.items():
            sizes = [v[0] for v in by_split.values()]
            accuracies = [100 * v[1] for v in by_split.values()]
            ax.plot(sizes, accuracies, marker="o", label=codec)
            for split_name, (bx, by) in by_split.items():
                if codec == "fp32":
                    ax.annotate(split_name, (bx, 100 * by), fontsize=6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short decades
        ax.set(title=family, xlabel="bytes per offload (log)", ylabel="hybrid top-1 accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "codecs.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _table(results: dict[str, FamilyResult]) -> str:
    head = f"{'family':<12} {'full':>7} {'hybrid':>7} {'split':>9} {'edge exit':>9}"
    head += "".join(f" {c:>10}" for c in ("fp32 B", "fp16 B", "int8 B", "int8+zstd"))
    lines = [head, "-" * len(head)]
    for family, r in results.items():
        s, h, b = r.summary, r.summary["hybrid"], r.summary["bytes"]
        lines.append(
            f"{family:<12} {100 * s['accuracy_full']:>6.2f}% {100 * h['accuracy']:>6.2f}% {h['split']:>9}"
            f" {100 * h['edge_exit_rate']:>8.1f}%"
            + "".join(f" {b[k]:>10.0f}" for k in ("fp32", "fp16", "int8", "int8_zstd"))
        )
    lines.append("")
    for family, r in results.items():
        s = r.summary
        ratio = s["bytes_ratio_vs_fp32"]
        lines.append(
            f"{family}: int8 {100 * ratio['int8']:.1f}% of fp32 bytes, int8+zstd {100 * ratio['int8_zstd']:.1f}%;"
            f" int8 extra loss {s['int8_extra_loss_points']:+.2f} pt; accuracy by codec "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in s["accuracy_by_codec"].items())
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench accuracy`` (``--pretrained``: :mod:`benchmarks.transfer`'s too)."""
    add_out(parser)
    add_training(parser)
    add_budget(parser)
    parser.add_argument(
        "--families",
        nargs="+",
        default=None,
        choices=[*SIZES, "mobilenet_v2", "efficientnet_lite0"],
        help="families to measure (default: all of the mode's: the 28-px ones, or the two pretrained ones)",
    )
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--split", type=int, default=None, help="hybrid split point (default: the middle one)")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N samples (smoke runs)")
    from benchmarks.transfer import add_arguments as transfer_arguments

    transfer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write results.json and the plots."""
    if args.pretrained:
        from benchmarks.transfer import run_transfer

        return run_transfer(args)
    args.families = args.families or list(SIZES)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    data = load_fashion_mnist(args.data_dir)
    if args.limit_train:
        data = Dataset(
            **{
                **data.__dict__,
                "x_train": data.x_train[: args.limit_train],
                "y_train": data.y_train[: args.limit_train],
            }
        )
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)
    cache = args.cache_dir or default_cache_dir()
    results: dict[str, FamilyResult] = {}
    for family in args.families:
        print(f"{family}: training or loading, then measuring", file=sys.stderr)
        results[family] = bench_family(
            family,
            data,
            train,
            cache,
            width=SIZES[family]["width"],
            budget=args.budget / 100,
            confidence=args.confidence,
            criterion_name=args.criterion,
            split=args.split,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plots = plot(results, args.out)
    report = {
        "benchmark": "accuracy",
        "dataset": data.name,
        "n_test": len(data.y_test),
        "n_train": len(data.y_train),
        "n_cal": len(data.y_cal),
        "budget_points": args.budget,
        "confidence": args.confidence,
        "criterion": args.criterion,
        "train": {"epochs": train.epochs, "batch_size": train.batch_size, "lr": train.lr},
        "codecs": list(CODECS),
        "families": {f: r.summary for f, r in results.items()},
        "plots": [p.name for p in plots],
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "seconds": time.perf_counter() - started,
        "command": "edgesplit bench accuracy " + " ".join(sys.argv[3:]),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(_table(results))
    print(f"\nwrote {args.out / 'results.json'}, {', '.join(str(p) for p in plots)} in {report['seconds']:.0f}s")
    return 0
