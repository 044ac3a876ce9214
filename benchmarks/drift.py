"""``edgesplit bench drift``: static against adaptive exit thresholds on a stream that drifts and comes back.

The Fashion-MNIST MobileNetV2 bundle of ``bench accuracy`` / ``bench network`` (the same cache). The test split as
a stream: ``--clean`` clean requests, then ``--per-severity`` requests at each severity 1..5 of the corruptions
(:mod:`benchmarks.corruptions`: ImageNet-C style; the corruption cycles request by request), then ``--after`` clean
requests again. Every request goes, side by side and in turn, to two runtimes on one real cloud (in-process on
127.0.0.1): ``static`` (the calibrated thresholds) and ``adaptive`` (``--audit-rate`` of exited samples audited,
thresholds re-calibrated at run time, :mod:`edge.auditor`), and to the full model on the edge (the reference).

Per phase: accuracy gap to the full model on the same samples (points; the budget is ``--budget``), disagreement
with it, exit rate, offload rate, audits (% of exited samples, bytes). Targets: static breaks the budget somewhere;
adaptive stays within budget + 0.5 point in every phase with at most 5% of exited samples audited, and gets back to
90% of its clean exit rate within a number of requests after the drift ends (measured: ``recovery_requests``).

Writes ``DIR/results.json``, ``DIR/table.md`` and ``DIR/drift.png``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from benchmarks.options import add_budget, add_out, add_training
from edge.audit import ControllerConfig
from edge.auditor import AuditConfig
from edge.client import CloudClient
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle

__all__ = ["add_arguments", "run"]

ROLL = 250
"""Requests in the rolling means of the plot and of the recovery measurement."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit bench drift``."""
    add_out(parser)
    add_training(parser)
    add_budget(parser)
    parser.add_argument("--clean", type=int, default=3000, help="clean requests first (default %(default)s)")
    parser.add_argument("--per-severity", type=int, default=1000, help="requests per severity (default %(default)s)")
    parser.add_argument("--after", type=int, default=4000, help="clean requests after the drift (default %(default)s)")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS), choices=list(CORRUPTIONS))
    parser.add_argument("--audit-rate", type=float, default=0.05, help="fraction of exited samples audited")
    parser.add_argument("--audit-max-rps", type=float, default=20.0, help="audits a second at most")
    parser.add_argument("--window", type=int, default=1000, help="requests the online estimates cover")
    parser.add_argument("--hold", type=int, default=200, help="requests after a tightening before loosening")
    parser.add_argument("--every", type=int, default=50, help="observations between the controller's evaluations")
    parser.add_argument(
        "--audit-confidence", type=float, default=0.5, help="the online bound's confidence (0.5: the point estimate)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _bundle(args: argparse.Namespace) -> tuple[Bundle, Any]:
    from benchmarks.accuracy import SIZES
    from split.data import load_dataset
    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, default_cache_dir, make_bundle
    from split.train import TrainConfig

    data = load_dataset("fashion-mnist", **({"data_dir": args.data_dir} if args.data_dir else {}))
    model = ModelConfig("mobilenetv2", width=SIZES["mobilenetv2"]["width"], in_channels=1, image_size=28)
    train = TrainConfig(epochs=args.epochs, batch_size=128, lr=4e-3)  # as bench accuracy / network: one cache
    config = BundleConfig(budget=args.budget / 100, confidence=args.confidence)
    bundle, _ = make_bundle(data, model, train, config, args.cache_dir or default_cache_dir())
    return bundle, data


def phases(args: argparse.Namespace) -> list[tuple[str, int, int | None]]:
    """(name, requests, severity) of each phase in stream order (severity ``None``: clean)."""
    drift = [(f"severity {s}", args.per_severity, s) for s in SEVERITIES]
    return [("clean", args.clean, None), *drift, ("clean again", args.after, None)]


def stream(data: Any, plan: list[tuple[str, int, int | None]], names: list[str], seed: int) -> dict[str, Any]:
    """The requests: model-ready samples, labels, phase and corruption of each."""
    rng = np.random.default_rng(seed)
    total = sum(n for _, n, _ in plan)
    idx = np.resize(rng.permutation(len(data.x_test)), total)
    mean, std = float(data.preprocessing["mean"]), float(data.preprocessing["std"])
    x = data.x_test[idx].copy()
    phase, corruption = np.empty(total, dtype=object), np.full(total, "none", dtype=object)
    start = 0
    for name, n, severity in plan:
        phase[start : start + n] = name
        for k, c in enumerate(names if severity is not None else ()):
            pos = np.arange(start + k, start + n, len(names))
            raw = x[pos, 0] * std + mean
            x[pos, 0] = ((corrupt(c, raw, severity, rng) - mean) / std).astype(np.float32)  # type: ignore[arg-type]
            corruption[pos] = c
        start += n
    return {"x": x, "y": data.y_test[idx], "phase": phase, "corruption": corruption}


def _runtimes(bundle: Bundle, target: str, args: argparse.Namespace) -> dict[str, Any]:
    m = bundle.manifest
    clients = [CloudClient(target, model=m.model, bundle_hash=m.content_hash, timeout_s=30) for _ in range(2)]
    for c in clients:
        c.wait_ready(30)
    controller = ControllerConfig(every=args.every, hold=args.hold, confidence=args.audit_confidence, warmup=200)
    audit = AuditConfig(rate=args.audit_rate, max_rps=args.audit_max_rps, adaptive=True, window=args.window,
                        controller=controller)  # fmt: skip
    return {
        "static": EdgeRuntime(bundle, cloud=clients[0], deadline_ms=30_000),
        "adaptive": EdgeRuntime(
            bundle, cloud=clients[1], deadline_ms=30_000, audit=audit, rng=random.Random(args.seed)
        ),
        "full": EdgeRuntime(bundle, split=len(m.segments), exits=False),
        "clients": clients,
    }


def serve(bundle: Bundle, requests: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every request to both runtimes and the full model, in turn; per request what each answered."""
    from cloud.server import CloudConfig, CloudServer

    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=2))
    port = server.start()
    rt = _runtimes(bundle, f"127.0.0.1:{port}", args)
    names = [e.name for e in bundle.manifest.exits_before(bundle.manifest.default_split)]
    total = len(requests["y"])
    rec: dict[str, Any] = {k: np.zeros(total, dtype=np.int64) for k in ("static", "adaptive", "full")}
    rec.update({f"{k}_source": np.empty(total, dtype=object) for k in ("static", "adaptive")})
    rec["thresholds"] = {n: np.zeros(total) for n in names}
    rec["audits"], rec["audit_bytes"] = np.zeros(total, dtype=np.int64), np.zeros(total, dtype=np.int64)
    for r, x in enumerate(requests["x"]):
        for key in ("static", "adaptive", "full") if r % 2 else ("full", "adaptive", "static"):
            a = rt[key].infer(x)
            rec[key][r] = a.label
            if key != "full":
                rec[f"{key}_source"][r] = a.source
        for n, value in rt["adaptive"].thresholds.items():
            if n in rec["thresholds"]:
                rec["thresholds"][n][r] = value
        if r % 10 == 0 or r == total - 1:
            audit = rt["adaptive"].stats()["audit"]
            rec["audits"][r], rec["audit_bytes"][r] = audit["sent"], audit["bytes"]
        if r % 1000 == 0:
            print(f"request {r}/{total}", file=sys.stderr, flush=True)
    rec["audit_stats"] = rt["adaptive"].stats()["audit"]
    rt["adaptive"].close()
    for c in rt["clients"]:
        c.close()
    server.stop(grace=1.0)
    rec["audits"] = np.maximum.accumulate(rec["audits"])
    rec["audit_bytes"] = np.maximum.accumulate(rec["audit_bytes"])
    return rec


def _phase_row(rec: dict[str, Any], y: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    full_ok = rec["full"][mask] == y[mask]
    row: dict[str, Any] = {"requests": int(mask.sum()), "accuracy_full": float(full_ok.mean())}
    for key in ("static", "adaptive"):
        source = rec[f"{key}_source"][mask]
        ok = rec[key][mask] == y[mask]
        exited = int((source == "exit").sum())
        row[key] = {
            "accuracy": float(ok.mean()),
            "gap_points": 100 * float(full_ok.mean() - ok.mean()),
            "disagreement_points": 100 * float((rec[key][mask] != rec["full"][mask]).mean()),
            "exit_rate": exited / len(source),
            "offload_rate": float((source == "cloud").mean()),
            "degraded": int(sum(s not in ("exit", "cloud", "edge") for s in source)),
        }
    idx = np.nonzero(mask)[0]
    first, last = idx[0], idx[-1]
    if last - first + 1 != len(idx):  # interleaved requests (one corruption's): audits are counted per stretch
        row["adaptive"].update(audits=None, audit_bytes=None, audited_of_exited=None)
        return row
    sent = int(rec["audits"][last] - (rec["audits"][first - 1] if first else 0))
    nbytes = int(rec["audit_bytes"][last] - (rec["audit_bytes"][first - 1] if first else 0))
    exited = max(1, int((rec["adaptive_source"][mask] == "exit").sum()))
    row["adaptive"].update(audits=sent, audit_bytes=nbytes, audited_of_exited=sent / exited)
    return row


def _rolling(values: np.ndarray, n: int = ROLL) -> np.ndarray:
    c = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    k = np.minimum(np.arange(1, len(values) + 1), n)
    return (c[1:] - c[np.arange(1, len(values) + 1) - k]) / k


def recovery(rec: dict[str, Any], plan: list[tuple[str, int, int | None]]) -> dict[str, Any]:
    """Requests after the drift ends until the adaptive exit rate (rolling over :data:`ROLL` requests, all of them
    after the drift) is back to 90% of its clean-phase rate; ``None``: not within the run."""
    clean_n, end = plan[0][1], sum(n for _, n, _ in plan[:-1])
    exits = rec["adaptive_source"] == "exit"
    clean_rate = float(exits[ROLL:clean_n].mean())  # after the first window: the controller has had its say
    after = _rolling(exits[end:])
    ok = np.nonzero((after >= 0.9 * clean_rate) & (np.arange(len(after)) >= ROLL - 1))[0]
    return {"clean_exit_rate": clean_rate, "recovery_requests": int(ok[0]) + 1 if len(ok) else None}


def targets(rows: dict[str, Any], rec_: dict[str, Any], budget: float, whole: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the figure it is judged on (audits: over the whole run, ``whole``; the
    phases' own fractions beside it)."""
    worst_static = max(r["static"]["gap_points"] for r in rows.values())
    worst_adaptive = max(r["adaptive"]["gap_points"] for r in rows.values())
    audited = whole["adaptive"]["audited_of_exited"]
    per_phase = {p: r["adaptive"]["audited_of_exited"] for p, r in rows.items()}
    return {
        "static_breaks_budget": {"met": worst_static > budget + 1e-9, "worst_gap_points": worst_static,
                                 "phases": [p for p, r in rows.items() if r["static"]["gap_points"] > budget]},
        "adaptive_within_budget_plus_half": {"met": worst_adaptive <= budget + 0.5 + 1e-9,
                                             "worst_gap_points": worst_adaptive},
        "audited_at_most_5pct_of_exited": {"met": audited <= 0.05, "whole_run_fraction": audited,
                                           "per_phase": per_phase},
        "recovers_90pct_exit_rate": {"met": rec_["recovery_requests"] is not None, **rec_},
    }  # fmt: skip


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.0f}"


def table(results: dict[str, Any]) -> str:
    """The per-phase table (markdown)."""
    head = ("| phase | requests | full acc | static gap (pt) | adaptive gap (pt) | static disagr. (pt) |"
            " adaptive disagr. (pt) | static exit | adaptive exit | static offload | adaptive offload |"
            " audited / exited | audit KiB |")  # fmt: skip
    lines = [head, "|" + "---|" * 13]
    for name, r in results["phases"].items():
        s, a = r["static"], r["adaptive"]
        lines.append(
            f"| {name} | {r['requests']} | {r['accuracy_full']:.1%} | {s['gap_points']:+.2f} | {a['gap_points']:+.2f}"
            f" | {s['disagreement_points']:.2f} | {a['disagreement_points']:.2f} | {s['exit_rate']:.1%}"
            f" | {a['exit_rate']:.1%} | {s['offload_rate']:.1%} | {a['offload_rate']:.1%}"
            f" | {_pct(a['audited_of_exited'])} | {_kib(a['audit_bytes'])} |"
        )
    return "\n".join(lines)


def plot(rec: dict[str, Any], requests: dict[str, Any], plan: list[tuple[str, int, int | None]],
         calibrated: dict[str, float], out: Path) -> Path:  # fmt: skip
    """Over requests: rolling accuracy gap, exit rate, the adaptive thresholds in force, audits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    r = np.arange(len(requests["y"]))
    full_ok = rec["full"] == requests["y"]
    for key, color in (("static", "tab:red"), ("adaptive", "tab:blue")):
        gap = 100 * (_rolling(full_ok) - _rolling(rec[key] == requests["y"]))
        axes[0].plot(r, gap, color=color, label=key)
        axes[1].plot(r, _rolling(rec[f"{key}_source"] == "exit"), color=color, label=key)
    axes[0].axhline(1.0, color="k", ls="--", lw=0.8, label="budget")
    axes[0].set_ylabel(f"accuracy gap to full\n(pt, rolling {ROLL})")
    axes[1].set_ylabel("edge exit rate")
    for (name, values), color in zip(rec["thresholds"].items(), ("tab:green", "tab:purple"), strict=False):
        axes[2].plot(r, values, color=color, label=f"{name} in force")
        axes[2].axhline(calibrated[name], color=color, ls=":", lw=0.8, label=f"{name} calibrated")
    axes[2].set_ylabel("adaptive threshold")
    axes[3].plot(r, rec["audits"], color="tab:blue", label="audits sent (cumulative)")
    axes[3].set_ylabel("audits")
    axes[3].set_xlabel("request")
    start = 0
    for name, n, severity in plan:
        for ax in axes:
            if severity is not None:
                ax.axvspan(start, start + n, color="orange", alpha=0.04 * severity, lw=0)
        axes[0].text(start + n / 2, axes[0].get_ylim()[1] * 0.9, name, ha="center", fontsize=7)
        start += n
    for ax in axes:
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = out / "drift.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Run the drift benchmark; print the table; write results.json, table.md and drift.png."""
    import torch

    started = time.perf_counter()
    bundle, data = _bundle(args)
    torch.set_num_threads(1)
    plan = phases(args)
    requests = stream(data, plan, args.corruptions, args.seed)
    rec = serve(bundle, requests, args)
    rows = {name: _phase_row(rec, requests["y"], requests["phase"] == name) for name, _, _ in plan}
    for c in args.corruptions:  # the drift phases by corruption
        drift = (requests["corruption"] == c) & np.isin(requests["phase"], [p for p, _, s in plan if s])
        rows[f"drift: {c}"] = _phase_row(rec, requests["y"], drift)
    m = bundle.manifest
    calibrated = {e.name: e.threshold for e in m.exits_before(m.default_split)}
    phase_rows = {k: v for k, v in rows.items() if not k.startswith("drift:")}
    rows["whole run"] = _phase_row(rec, requests["y"], np.ones(len(requests["y"]), dtype=bool))
    results = {
        "benchmark": "drift", "model": m.model, "dataset": "fashion-mnist", "split": m.default_split,
        "budget_points": args.budget, "calibrated_thresholds": calibrated, "corruptions": args.corruptions,
        "audit": {"rate": args.audit_rate, "max_rps": args.audit_max_rps, "window": args.window, "hold": args.hold,
                  "every": args.every, "confidence": args.audit_confidence},
        "plan": [{"phase": p, "requests": n, "severity": s} for p, n, s in plan],
        "phases": rows, "final_audit_stats": rec["audit_stats"],
        "targets": targets(phase_rows, recovery(rec, plan), args.budget, rows["whole run"]),
        "command": "edgesplit bench drift " + " ".join(sys.argv[3:]),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    results["plot"] = plot(rec, requests, plan, calibrated, args.out).name
    results["seconds"] = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (args.out / "table.md").write_text(table(results) + "\n")
    print(table(results))
    print(json.dumps(results["targets"], indent=2, default=float))
    return 0
