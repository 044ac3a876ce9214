"""``edgesplit bench edge``: what each lever on the edge half buys, against the full-precision edge.

For each family on Fashion-MNIST (the accuracy benchmark's trained models, from the cache), at the middle split:

* variants ``fp32`` and ``int8`` (:mod:`split.quantize`; tails fp32): the edge head's latency (ONNX Runtime, one
  thread, one sample, median: every segment before the split and every exit head on the way, i.e. the path of
  an offloaded sample; the variants are timed side by side, in turn), the same per sample on a burst of
  ``--batch`` (``latency_batch_ms``), the time to make the ``int8`` wire tensors from the head's output
  (``wire_int8``: an int8 edge hands its uint8 over; beside it, what requantizing would cost), its bytes (the
  ONNX files of those segments and exits), the same two for the whole model on the edge (``*_full_edge``: every
  segment and exit), and, on the test split, the hybrid's accuracy and edge exit rate (the exported graphs on
  the edge, the fp32 tail for offloaded samples).
  ``pruned`` (:mod:`split.prune`): the edge segments with ``--prune-ratio`` of their prunable channels removed by
  filter magnitude and the net fine-tuned ``--prune-epochs``, exported fp32 and calibrated like the others.
* distillation: the exits are re-initialised and trained on the frozen backbone, once by cross-entropy and once
  by distillation from the final classifier (same seed, epochs and samples), each calibrated within the same
  budget; their edge exit rates and hybrid accuracies on the test split.

Writes ``DIR/results.json`` and ``DIR/edge.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.options import add_budget, add_out, add_training
from edge.policy import criterion, softmax
from protos.bundle import Bundle, Manifest
from protos.codecs import Codec, dequantize, encode
from split.calibrate import calibrate, cascade
from split.data import Dataset, load_fashion_mnist
from split.export import export_bundle, with_calibration
from split.partition import ModelConfig, SplitNet
from split.pipeline import BundleConfig, calibrate_net, default_cache_dir, make_bundle
from split.prune import PruneConfig, prune_and_finetune
from split.quantize import edge_outputs, quantized_copy
from split.samples import as_array
from split.train import ExitLoss, TrainConfig, predict, train_exits

__all__ = [
    "VARIANTS",
    "add_arguments",
    "bench_family",
    "int8_bundle",
    "int8_vs_fp32",
    "latencies",
    "run",
    "variant_figures",
]

VARIANTS = ("fp32", "int8", "pruned")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench edge``."""
    from benchmarks.accuracy import SIZES

    add_out(parser)
    add_training(parser)
    add_budget(parser)
    parser.add_argument("--families", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--split", type=int, default=None, help="hybrid split point (default: the middle one)")
    edge = parser
    edge.add_argument("--repeats", type=int, default=300, help="timed edge runs per variant (default %(default)s)")
    edge.add_argument("--batch", type=int, default=64, help="burst size for the per-sample batch latency")
    edge.add_argument("--kd-epochs", type=int, default=3, help="exits-only training epochs for ce vs. kd")
    edge.add_argument("--kd-train", type=int, default=20000, help="training samples for ce vs. kd exits")
    edge.add_argument(
        "--kd-temperature",
        type=float,
        nargs="+",
        default=[2.0, 4.0],
        help="distillation temperatures to try (default: %(default)s)",
    )
    edge.add_argument(
        "--kd-alpha",
        type=float,
        nargs="+",
        default=[0.0, 0.5],
        help="cross-entropy shares of the kd loss to try (default: %(default)s); the pair with the most exits on "
        "held-out training samples is the one compared with cross-entropy on the test split",
    )
    edge.add_argument("--prune-ratio", type=float, default=0.5, help="channels removed from the edge segments")
    edge.add_argument("--prune-epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    edge.add_argument(
        "--overhead-only",
        action="store_true",
        help="only EdgeRuntime.infer vs. its bare sessions (the demo model, MobileNetV2 224 px): DIR/overhead.json",
    )


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _head_files(m: Manifest, split: int) -> list[str]:
    return [s.file for s in m.segments[:split]] + [e.file for e in m.exits_before(split)]


def edge_head(bundle: Bundle, split: int) -> Callable[[np.ndarray], None]:
    """The edge head as a function of its input: segments ``[0, split)`` and the exits among them, sessions built
    once."""
    m = bundle.manifest
    segments = [(_session(bundle.file(s.file)), s.input.name) for s in m.segments[:split]]
    exits = {e.after_segment: _session(bundle.file(e.file)) for e in m.exits_before(split)}
    names = {i: s.get_inputs()[0].name for i, s in exits.items()}

    def head(x: np.ndarray) -> None:
        for i, (session, name) in enumerate(segments):
            x = session.run(None, {name: x})[0]
            if i in exits:
                exits[i].run(None, {names[i]: x})

    return head


def head_latency_ms(
    heads: Mapping[str, Callable[[np.ndarray], None]], sample: np.ndarray, repeats: int
) -> dict[str, float]:
    """Median milliseconds of each head on ``sample`` (one sample, or a batch: then per sample), measured side by
    side: each round runs every head once, in turn, so a slow spell of the shared machine hits them alike."""
    fns = {name: (lambda head=head: head(sample)) for name, head in heads.items()}
    return {name: us / 1e3 / len(sample) for name, us in _median_us(fns, repeats).items()}


def edge_latency_ms(bundle: Bundle, split: int, sample: np.ndarray, repeats: int) -> float:
    """Median milliseconds of one bundle's edge head on ``sample`` (see :func:`head_latency_ms`)."""
    return head_latency_ms({"head": edge_head(bundle, split)}, sample, repeats)["head"]


def latencies(
    bundles: Mapping[str, Bundle], split: int, data: Dataset, repeats: int, batch: int
) -> dict[str, dict[str, float]]:
    """Per variant: ``latency_ms`` (the head before ``split``, one sample), ``latency_batch_ms`` (per sample, a
    burst of ``batch``: where compute outweighs per-operator overheads) and ``latency_full_edge_ms`` (the whole
    model on the edge), each measured with the variants side by side."""
    n = len(next(iter(bundles.values())).manifest.segments)
    one, burst = data.x_test[:1], data.x_test[:batch]
    head = head_latency_ms({k: edge_head(b, split) for k, b in bundles.items()}, one, repeats)
    heads = head_latency_ms({k: edge_head(b, split) for k, b in bundles.items()}, burst, max(repeats // 10, 5))
    full = head_latency_ms({k: edge_head(b, n) for k, b in bundles.items()}, one, repeats)
    return {
        k: {"latency_ms": head[k], "latency_batch_ms": heads[k], "batch": batch, "latency_full_edge_ms": full[k]}
        for k in bundles
    }


def _median_us(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median microseconds of each function, run in turn round after round."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e6 * float(np.median(t)) for name, t in times.items()}


def wire_encode_us(bundle: Bundle, split: int, sample: np.ndarray, repeats: int) -> dict[str, float]:
    """Microseconds to turn the head's output for one sample into the ``int8`` wire tensors: ``encode_us`` the
    way the edge does it (an int8 edge hands its uint8 tensor over; a float32 one quantizes), and for an int8
    edge ``requantize_us``, what dequantizing and quantizing it afresh would cost instead."""
    m = bundle.manifest
    x = edge_outputs(bundle.root, m, sample)[0][split]
    boundary, name, int8 = m.segments[split].input, m.split_point(split).tensor.name, Codec("int8")
    fns: dict[str, Callable[[], object]] = {"encode_us": lambda: encode(int8, name, x, boundary)}
    if boundary.quantized:
        fns["requantize_us"] = lambda: encode(int8, name, dequantize(x, boundary))
    return _median_us(fns, repeats)


def hybrid(bundle: Bundle, split: int, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> dict[str, float]:
    """The hybrid on ``x``: the bundle's edge graphs and thresholds before ``split``, its fp32 tail after."""
    m = bundle.manifest
    used = m.exits_before(split)
    segments = [(_session(bundle.file(s.file)), s.input.name) for s in m.segments[:split]]
    exits = [(_session(bundle.file(e.file)), e) for e in used]
    point = m.split_point(split)
    tail = _session(bundle.file(point.tails["fp32"]))
    crits = [criterion(e.criterion) for e in used]
    preds, taken = [], []
    for start in range(0, len(x), batch):
        bounds = [x[start : start + batch]]
        for session, name in segments:
            bounds.append(session.run(None, {name: bounds[-1]})[0])
        probs = [softmax(s.run(None, {s.get_inputs()[0].name: bounds[e.after_segment + 1]})[0]) for s, e in exits]
        # an int8 edge's uint8 boundary reaches the tail as the int8 wire would bring it: (q - zero_point) * scale
        final = softmax(tail.run(None, {point.tensor.name: dequantize(bounds[split], m.segments[split].input)})[0])
        p, t = cascade(final, probs, crits, [e.threshold for e in used])
        preds.append(p)
        taken.append(t)
    p, t = np.concatenate(preds), np.concatenate(taken)
    return {"hybrid_accuracy": float((p == y).mean()), "edge_exit_rate": float((t < len(used)).mean())}


def int8_bundle(fp32: Bundle, out: Path, net: SplitNet, data: Dataset, config: BundleConfig) -> Bundle:
    """A copy of ``fp32`` with int8 segments and exits, its thresholds recalibrated on the int8 exits."""
    manifest = quantized_copy(fp32.root, fp32.manifest, out, as_array(data.x_cal))
    _, logits = edge_outputs(out, manifest, as_array(data.x_cal))
    with_calibration(out, manifest, calibrate_net(net, data, config, [logits[e.name] for e in manifest.exits]))
    return Bundle.load(out)


def pruned_bundle(
    net: SplitNet,
    model: ModelConfig,
    split: int,
    data: Dataset,
    config: BundleConfig,
    train: TrainConfig,
    prune: PruneConfig,
    out: Path,
) -> Bundle:
    """``net`` with its segments before ``split`` channel-pruned and fine-tuned, calibrated and exported (fp32)."""
    pruned = prune_and_finetune(net, split, data, prune, train)
    export_bundle(
        pruned,
        model,
        out,
        model_name=f"{model.family}_{data.name}_pruned",
        classes=data.classes,
        default_split=split,
        calibration=calibrate_net(pruned, data, config),
        criterion=config.criterion,
        preprocessing=data.preprocessing,
    )
    return Bundle.load(out)


def variant_figures(bundle: Bundle, split: int, data: Dataset, repeats: int, timed: dict[str, float]) -> dict[str, Any]:
    """One edge variant's figures: ``timed`` (its latencies), the int8 wire's encode time, the head's bytes and the
    hybrid's accuracy and edge exit rate on the test split."""
    files = _head_files(bundle.manifest, split)
    n = len(bundle.manifest.segments)
    return {
        **timed,
        "wire_int8": wire_encode_us(bundle, split, data.x_test[:1], repeats),
        "bytes": sum(bundle.file(f).stat().st_size for f in files),
        "bytes_full_edge": sum(bundle.file(f).stat().st_size for f in _head_files(bundle.manifest, n)),
        **hybrid(bundle, split, as_array(data.x_test), data.y_test),
        "files": files,
    }


def _reset_exits(net: SplitNet, seed: int) -> SplitNet:
    net = copy.deepcopy(net)
    torch.manual_seed(seed)
    for module in net.exits.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return net


def distillation(
    net: SplitNet,
    data: Dataset,
    split: int,
    config: BundleConfig,
    train: TrainConfig,
    kds: Sequence[ExitLoss],
    n_train: int,
    n_val: int = 5000,
) -> dict[str, Any]:
    """Exits re-trained on the frozen backbone by cross-entropy and by distillation, each calibrated within the
    budget; edge exit rate and hybrid accuracy on the test split at ``split`` (torch, fp32).

    The distillation settings ``kds`` (temperature, cross-entropy share) are chosen by the exit rate on ``n_val``
    training samples the exits did not train on, never on the test split; every candidate's rate is reported."""
    subset = replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train])
    x_val, y_val = data.x_train[n_train : n_train + n_val], data.y_train[n_train : n_train + n_val]
    used = [k for k, pos in enumerate(net.exit_positions) if pos < split]
    crit = criterion(config.criterion)

    def trained(loss: ExitLoss) -> tuple[SplitNet, list[float]]:
        student = _reset_exits(net, train.seed)
        train_exits(student, subset, train, progress=False, loss=loss)
        cal_final, cal_exits = predict(student, data.x_cal)
        cal = calibrate(
            data.y_cal,
            softmax(cal_final),
            [softmax(cal_exits[k]) for k in used],
            [crit] * len(used),
            [f"exit{k}" for k in used],
            config.budget,
            config.confidence,
        )
        return student, [cal.thresholds[f"exit{k}"] for k in used]

    def cascade_on(student: SplitNet, thresholds: list[float], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        final, exits = predict(student, x)
        preds, taken = cascade(softmax(final), [softmax(exits[k]) for k in used], [crit] * len(used), thresholds)
        return preds, taken, exits

    candidates = []
    for kd in kds:
        student, thresholds = trained(kd)
        _, taken, _ = cascade_on(student, thresholds, x_val)
        candidates.append(
            {"temperature": kd.temperature, "alpha": kd.alpha, "val_exit_rate": float((taken < len(used)).mean())}
        )
    best = max(range(len(kds)), key=lambda i: candidates[i]["val_exit_rate"])
    result: dict[str, Any] = {
        "temperature": kds[best].temperature,
        "alpha": kds[best].alpha,
        "epochs": train.epochs,
        "candidates": candidates,
        "validation_samples": len(y_val),
    }
    for name, loss in (("ce", ExitLoss()), ("kd", kds[best])):
        student, thresholds = trained(loss)
        _, val_taken, _ = cascade_on(student, thresholds, x_val)
        preds, taken, exits = cascade_on(student, thresholds, as_array(data.x_test))
        result[f"{name}_val_exit_rate"] = float((val_taken < len(used)).mean())
        result[f"{name}_exit_rate"] = float((taken < len(used)).mean())
        result[f"{name}_hybrid_accuracy"] = float((preds == data.y_test).mean())
        result[f"{name}_exit_accuracy"] = {f"exit{k}": float((exits[k].argmax(-1) == data.y_test).mean()) for k in used}
    result["kd_minus_ce_points"] = 100 * (result["kd_exit_rate"] - result["ce_exit_rate"])
    return result


def int8_vs_fp32(f: dict[str, Any], i: dict[str, Any]) -> dict[str, float]:
    """The int8 edge against the fp32 one, from their :func:`variant_figures`: speed-ups, bytes, accuracy."""
    return {
        "speedup": f["latency_ms"] / i["latency_ms"],
        "speedup_batch": f["latency_batch_ms"] / i["latency_batch_ms"],
        "bytes_ratio": i["bytes"] / f["bytes"],
        "hybrid_accuracy_points": 100 * (i["hybrid_accuracy"] - f["hybrid_accuracy"]),
    }


def bench_family(
    family: str,
    width: float,
    data: Dataset,
    train: TrainConfig,
    config: BundleConfig,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """Every variant of ``family``'s edge (bundles written under ``work``), and the distillation comparison."""
    started = time.perf_counter()
    model = ModelConfig(family, width=width, in_channels=data.input_shape[0], image_size=data.input_shape[-1])
    cache = args.cache_dir or default_cache_dir()
    fp32, net = make_bundle(data, model, train, config, cache, work / f"{family}-fp32", False)
    n = len(fp32.manifest.segments)
    split = n // 2 if args.split is None else args.split
    if not 1 <= split < n:
        raise ValueError(f"split must be in 1..{n - 1} (a split that offloads after some edge work), got {split}")
    int8 = int8_bundle(fp32, work / f"{family}-int8", net, data, config)
    result: dict[str, Any] = {
        "split": split,
        "accuracy_full": float((predict(net, data.x_test)[0].argmax(-1) == data.y_test).mean()),
    }
    pruned = pruned_bundle(net, model, split, data, config, train, PruneConfig(args.prune_ratio, args.prune_epochs),
                           work / f"{family}-pruned")  # fmt: skip
    bundles = {"fp32": fp32, "int8": int8, "pruned": pruned}
    timed = latencies(bundles, split, data, args.repeats, args.batch)
    for name, bundle in bundles.items():
        result[name] = variant_figures(bundle, split, data, args.repeats, timed[name])
    kds = [ExitLoss("kd", t, a) for t in args.kd_temperature for a in args.kd_alpha]
    kd_train = TrainConfig(epochs=args.kd_epochs, batch_size=train.batch_size, lr=train.lr, seed=train.seed)
    result["distillation"] = distillation(net, data, split, config, kd_train, kds, args.kd_train)
    result["int8_vs_fp32"] = int8_vs_fp32(result["fp32"], result["int8"])
    result["seconds"] = time.perf_counter() - started
    return result


def plot(results: dict[str, dict[str, Any]], out: Path) -> Path:
    """``edge.png``: per family, edge latency and bytes per variant, and the exit rates of ce vs. kd exits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(results)
    xs = np.arange(len(families))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("latency_ms", "edge head latency (ms, 1 thread)"), ("bytes", "edge head bytes")]
    for ax, (key, label) in zip(axes[:2], panels, strict=True):
        present = [v for v in VARIANTS if any(results[f].get(v) for f in families)]
        width = 0.8 / len(present)
        for j, variant in enumerate(present):
            values = [results[f][variant][key] if results[f].get(variant) else 0 for f in families]
            ax.bar(xs + width * j, values, width, label=variant)
        ax.set(xticks=xs + 0.4 - width / 2, xticklabels=families, ylabel=label)
        ax.legend()
    for j, kind in enumerate(("ce", "kd")):
        rates = [100 * results[f]["distillation"][f"{kind}_exit_rate"] for f in families]
        axes[2].bar(xs + 0.4 * j, rates, 0.4, label=f"{kind} exits")
    axes[2].set(xticks=xs + 0.2, xticklabels=families, ylabel="test samples answered on the edge (%)")
    axes[2].legend()
    fig.tight_layout()
    path = out / "edge.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _handoff(wire: dict[str, float]) -> str:
    if "requantize_us" not in wire:  # the split tensor comes out of a graph left float32
        return f"int8 wire {wire['encode_us']:.1f} us (float boundary: quantized on the edge)"
    return f"int8 wire {wire['encode_us']:.1f} us handed over vs {wire['requantize_us']:.1f} us requantized"


def _table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'family':<12} {'variant':<7} {'latency ms':>10} {'batch ms':>9} {'bytes':>10} {'hybrid acc':>10}"
        f" {'edge exit':>9} {'int8 wire us':>12}"
    )
    lines = [head, "-" * len(head)]
    for family, r in results.items():
        for variant in VARIANTS:
            v = r.get(variant)
            if v is None:
                lines.append(f"{family:<12} {variant:<7} {'(not implemented)':>10}")
                continue
            lines.append(
                f"{family:<12} {variant:<7} {v['latency_ms']:>10.3f} {v['latency_batch_ms']:>9.4f} {v['bytes']:>10d}"
                f" {100 * v['hybrid_accuracy']:>9.2f}% {100 * v['edge_exit_rate']:>8.1f}%"
                f" {v['wire_int8']['encode_us']:>12.1f}"
            )
    lines.append("")
    for family, r in results.items():
        d, q = r["distillation"], r["int8_vs_fp32"]
        lines.append(
            f"{family}: int8 {q['speedup']:.2f}x faster ({q['speedup_batch']:.2f}x per sample in a batch of"
            f" {r['int8']['batch']}), {100 * q['bytes_ratio']:.1f}% of the bytes,"
            f" {_handoff(r['int8']['wire_int8'])},"
            f" hybrid {q['hybrid_accuracy_points']:+.2f} pt; exits ce {100 * d['ce_exit_rate']:.1f}%"
            f" (hybrid {100 * d['ce_hybrid_accuracy']:.2f}%) vs kd {100 * d['kd_exit_rate']:.1f}%"
            f" (hybrid {100 * d['kd_hybrid_accuracy']:.2f}%): {d['kd_minus_ce_points']:+.1f} pt"
        )
    return "\n".join(lines)


def overhead(cache: Path, work: Path, repeats: int) -> dict[str, Any]:
    """``EdgeRuntime.infer`` against its bare sessions (:func:`edge.overhead.edge_overhead`, one thread,
    edge-only): on the demo's model (digits, the demo's defaults, exits off and on) and on MobileNetV2 at 224 px
    (the ImageNet weights, exits off; a model-ready tensor of one of foolbox's photos)."""
    from benchmarks.photos import _export
    from edge.inputs import Inputs
    from edge.overhead import edge_overhead
    from split.data import load_digits
    from split.photos import imagenet_photos

    digits = load_digits()
    demo, _ = make_bundle(digits, ModelConfig(width=0.5), TrainConfig(epochs=30),
                          BundleConfig("max_softmax", 0.01, 1, confidence=0.95), cache)  # fmt: skip
    x = as_array(digits.x_test[:1])
    rows = {"demo": edge_overhead(demo, x, repeats), "demo_exits": edge_overhead(demo, x, repeats, exits=True)}
    big = _export("mobilenet_v2", work / "mobilenet_v2_224")
    photo = Inputs.load(big).batch([imagenet_photos()[0][0].read_bytes()])
    rows["mobilenet_v2_224"] = edge_overhead(big, photo, max(repeats // 10, 50))
    return rows


def _overhead_table(rows: dict[str, Any]) -> str:
    lines = ["", f"{'EdgeRuntime.infer vs. its bare sessions':<42}{'bare us':>10}{'infer us':>10}{'ratio':>8}"]
    for name, r in rows.items():
        lines.append(f"{name + (' (exits on)' if r['exits'] else ''):<42}{r['bare_us']:>10.1f}"
                     f"{r['infer_us']:>10.1f}{r['ratio']:>8.3f}")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write results.json and edge.png."""
    from benchmarks.accuracy import SIZES

    started = time.perf_counter()
    cache = args.cache_dir or default_cache_dir()
    if args.overhead_only:
        with tempfile.TemporaryDirectory() as work:
            rows = overhead(cache, Path(work), args.repeats)
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": "edge (overhead only)", "overhead": rows, "seconds": time.perf_counter() - started,
                  "command": "edgesplit bench edge " + " ".join(sys.argv[3:])}  # fmt: skip
        (args.out / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
        print(_overhead_table(rows))
        return 0
    data = load_fashion_mnist(args.data_dir)
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)
    config = BundleConfig(args.criterion, args.budget / 100, 1, "fp32", args.confidence)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for family in args.families:
            print(f"{family}: loading, exporting fp32 and int8 edges, measuring, ce/kd exits", file=sys.stderr)
            results[family] = bench_family(family, SIZES[family]["width"], data, train, config, args, Path(work))
        rows = overhead(cache, Path(work), args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    path = plot(results, args.out)
    report = {
        "benchmark": "edge",
        "dataset": data.name,
        "n_test": len(data.y_test),
        "n_cal": len(data.y_cal),
        "budget_points": args.budget,
        "confidence": args.confidence,
        "criterion": args.criterion,
        "repeats": args.repeats,
        "train": {"epochs": train.epochs, "batch_size": train.batch_size, "lr": train.lr},
        "distillation": {
            "epochs": args.kd_epochs,
            "train_samples": args.kd_train,
            "temperatures": args.kd_temperature,
            "alphas": args.kd_alpha,
        },
        "families": results,
        "overhead": rows,
        "plots": [path.name],
        "machine": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "seconds": time.perf_counter() - started,
        "command": "edgesplit bench edge " + " ".join(sys.argv[3:]),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(_table(results) + _overhead_table(rows))
    print(f"\nwrote {args.out / 'results.json'}, {path} in {report['seconds']:.0f}s")
    return 0
