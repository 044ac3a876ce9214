"""``edgesplit bench text``: text on the edge, per dataset and family (see the README's "Text on the edge").

Per dataset (``languages``: gettext catalogues; ``topics``: fortunes; or ``--data FILE``) and family
(``mobilebert``, ``bert``): the full model's test accuracy; each layer's exit accuracy; the hybrid at a budget
(``--budget`` points on the calibration split) with entropy and with patience: test accuracy, exit rate per layer,
mean layers run; mean latency on a device profile (``--device``; host ms scaled by the published reference
latency, :mod:`edge.devices`) and a network (``--network``) for edge-only with exits, cloud-only (the text sent)
and the hybrid (best split point); bytes per offload under each codec vs. the text's own bytes.

Training runs on one thread (the machine is shared); everything is seeded.
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
from benchmarks.textcost import codec_fidelity, layer_ms, routes
from benchmarks.textplan import planned
from edge.devices import device, emulation_factor
from netsim.profiles import PROFILES
from protos.bundle import Bundle
from split.textcal import calibrate_entropy, calibrate_patience, entropy_hybrid, patience_hybrid
from split.textdata import TextData, load_fortunes, load_languages, load_text_file
from split.textexport import export_text_bundle
from split.texttrain import MODES, TextConfig, layer_probs, train_text

__all__ = ["add_arguments", "run"]

_LENGTH = {"languages": 32, "topics": 64}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    add_out(parser)
    parser.add_argument("--datasets", nargs="+", default=["languages", "topics"], choices=["languages", "topics"])
    parser.add_argument("--data", type=Path, default=None, help="a user's .csv / .jsonl (text, label) instead")
    parser.add_argument("--families", nargs="+", default=["mobilebert", "bert"], choices=["mobilebert", "bert"])
    parser.add_argument("--mode", default="joint", choices=MODES, help="joint training or exits-only (DeeBERT)")
    parser.add_argument("--depth", type=int, default=4, help="encoder layers (an exit after each)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=300, help="texts per class at most")
    parser.add_argument("--budget", type=float, default=1.0, help="max accuracy loss vs. the full model, in points")
    parser.add_argument("--confidence", type=float, default=0.5, help="calibration confidence (0.5: point estimate)")
    parser.add_argument("--device", default="sd660", help="the device profile (edge.devices)")
    parser.add_argument("--network", default="4g", choices=sorted(PROFILES))
    parser.add_argument("--fidelity-samples", type=int, default=400, help="test texts for the codec measurement")
    parser.add_argument(
        "--profile-samples",
        type=int,
        default=None,
        help="calibration texts the planner's profile runs on (default: all, the texts the budget was calibrated on)",
    )


def _data(args: argparse.Namespace, name: str) -> TextData:
    if args.data is not None:
        return load_text_file(args.data)
    if name == "languages":
        return load_languages(per_class=args.per_class, min_texts=args.per_class)
    return load_fortunes(per_class=args.per_class * 2)


def _policies(data: TextData, cal: np.ndarray, test: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    budget, depth = args.budget / 100, len(test)
    ent = calibrate_entropy(data.cal[1], cal, budget, args.confidence)
    k, pat_cal = calibrate_patience(data.cal[1], cal, budget, args.confidence)
    return {
        "entropy": {
            "thresholds": ent.thresholds,
            "calibration": {"accuracy_hybrid": ent.accuracy_hybrid},
            "test": entropy_hybrid(test, ent.thresholds).summary(data.test[1], depth),
            "layer": entropy_hybrid(test, ent.thresholds).layer,
        },
        "patience": {
            "patience": k,
            "calibration": pat_cal,
            "test": patience_hybrid(test, k).summary(data.test[1], depth),
            "layer": patience_hybrid(test, k).layer,
        },
    }


def _one(
    args: argparse.Namespace, name: str, family: str, device_ms: tuple[float, float], work: Path
) -> dict[str, Any]:
    factor, host = device_ms
    data = _data(args, name)
    cfg = TextConfig(
        family=family,
        depth=args.depth,
        vocab_size=6000,
        max_length=_LENGTH.get(name, 64),
        epochs=args.epochs,
        batch_size=128,
        lr=3e-3,
        mode=args.mode,
    )
    start = time.perf_counter()
    model, tok = train_text(cfg, data)
    train_s = time.perf_counter() - start
    cal, test = layer_probs(model, tok, data.cal[0]), layer_probs(model, tok, data.test[0])
    labels = data.test[1]
    policies = _policies(data, cal, test, args)
    ent = policies["entropy"]
    path = work / f"{name}-{family}"
    export_text_bundle(model, tok, path, model_name=name, classes=data.classes, thresholds=ent["thresholds"])
    bundle = Bundle.load(path)
    lengths = [len(tok.encode_one(t)[0][0]) for t in data.test[0]]
    text_bytes = float(np.mean([len(t.encode()) for t in data.test[0]]))
    costs = layer_ms(bundle, int(np.median(lengths)))
    fid = {s: codec_fidelity(bundle, data.test[0][: args.fidelity_samples], s) for s in range(1, args.depth)}
    hidden16 = [fid[s]["fp16"]["bytes"] for s in range(1, args.depth)]
    net = PROFILES[args.network]
    for key, pol in policies.items():
        pol["latency"] = routes(costs, pol.pop("layer"), text_bytes, hidden16, factor, net)
        rule = {"criterion": key, "patience": int(policies["patience"]["patience"])}
        pol["planner"] = planned(bundle, rule, (data.cal[0], data.cal[1]), device=args.device, host_ms=host,
                                 net=net, budget=args.budget, samples=args.profile_samples)  # fmt: skip
    return {
        "dataset": name,
        "family": family,
        "classes": len(data.classes),
        "mode": args.mode,
        "samples": {"train": len(data.train[0]), "cal": len(data.cal[0]), "test": len(labels)},
        "params": sum(p.numel() for p in model.parameters()),
        "train_s": train_s,
        "full_accuracy": float((test[-1].argmax(-1) == labels).mean()),
        "layer_accuracy": [float((p.argmax(-1) == labels).mean()) for p in test],
        "policies": policies,
        "host_ms": costs,
        "median_tokens": float(np.median(lengths)),
        "text_bytes": text_bytes,
        "codecs": {str(s): v for s, v in fid.items()},
    }


def _row(r: dict[str, Any], policy: str) -> str:
    p = r["policies"][policy]
    lat = p["latency"]
    best = lat["hybrid"][lat["best_split"]]
    rates = " ".join(f"{x:.2f}" for x in p["test"]["exit_rate"])
    plan = _plan_cell(p["planner"]) if "planner" in p else "-"
    return (
        f"| {r['dataset']} | {r['family']} | {policy} | {100 * r['full_accuracy']:.1f} | "
        f"{100 * p['test']['accuracy']:.1f} | {100 * p['test']['exited_early']:.0f}% | {rates} | "
        f"{p['test']['mean_layers']:.2f} | {lat['edge_ms']:.1f} | {lat['cloud_ms']:.1f} | "
        f"{best['ms']:.1f} (s={lat['best_split']}) | {plan} |"
    )


def _plan_cell(p: dict[str, Any]) -> str:
    """The planner's route and its expected ms, beside the expected edge-only, cloud-only (text) and best hybrid."""
    c = p["plan"]
    where = "edge-only" if c["split"] == p["edge_only"]["split"] else f"split {c['split']} {c['codec']}"
    exits = "exits" if c["exits"] else "no exits"
    return (
        f"{where}, {exits}, {100 * c['offload_rate']:.0f}% offloaded: {c['latency_ms']:.1f}"
        f" (edge {p['edge_only']['latency_ms']:.1f} /"
        f" text {p['cloud_text']['latency_ms']:.1f} / hybrid {p['best_hybrid']['latency_ms']:.1f}"
        f" at s={p['best_hybrid']['split']})"
    )


def _table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        f"| dataset | family | policy | full % | hybrid % | exited early | exit rate per layer | mean layers |"
        f" edge-only ms ({args.device}) | cloud-only ms ({args.network}) | hybrid ms |"
        " planner's choice: expected ms (edge-only / text sent / best hybrid, expected) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [_row(r, pol) for r in results for pol in ("entropy", "patience")]
    codec = [
        "\n| dataset | family | text bytes | codec at h1 | bytes | agrees with fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for key, v in r["codecs"]["1"].items():
            codec.append(
                f"| {r['dataset']} | {r['family']} | {r['text_bytes']:.0f} | {key} | {v['bytes']:.0f} |"
                f" {100 * v['agreement']:.1f}% |"
            )
    return head + "\n".join(rows) + "\n" + "\n".join(codec) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run every dataset x family, print the tables, save results.json and results.md under ``--out``."""
    from split.reference import host_reference_ms

    torch.set_num_threads(1)
    profile = device(args.device)
    host = host_reference_ms(threads=1)
    factor = emulation_factor(profile.reference_ms(1), host)
    names = [args.data.stem] if args.data is not None else args.datasets
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for family in args.families:
                results.append(_one(args, name, family, (factor, host), Path(tmp)))
                print(f"{name} {family}: full {results[-1]['full_accuracy']:.3f}", flush=True)
    table = _table(results, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": profile.emulation(1, host),
        "network": PROFILES[args.network].name,
        "budget": args.budget,
        "confidence": args.confidence,
        "depth": args.depth,
        "epochs": args.epochs,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (args.out / "results.md").write_text(table)
    return 0
