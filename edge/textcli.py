"""``edgesplit edge`` on a text bundle: answer ``--text`` / ``--texts FILE`` with :class:`edge.text.TextRuntime`.

One line per text (``label``, confidence, where it was answered, ``degraded: REASON`` when the cloud failed it),
then the runtime's counters; ``--json PATH`` writes the answers and counters as JSON (``-``: to stdout, instead of
the lines). The image bundles' options (``--input``, ``--listen``, ``--bottleneck`` …) are refused by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.client import CloudClient
from edge.runtime import Answer
from edge.text import TextRuntime
from protos.bundle import Bundle

__all__ = ["IMAGE_ONLY", "read_texts", "run_text"]

IMAGE_ONLY = {
    "input": "--input",
    "listen": "--listen",
    "labels": "--labels",
    "bottleneck": "--bottleneck",
    "adapt": "--adapt",
    "race": "--race",
    "device": "--device",
    "metrics": "--metrics",
    "audit_rate": "--audit-rate",
    "adaptive_thresholds": "--adaptive-thresholds",
    "triton_prefix": "--triton-prefix",
}
"""The options (argparse dest -> flag) a text bundle does not take."""

_DEFAULTS: dict[str, Any] = {"bottleneck": False, "race": False, "adaptive_thresholds": False}


def _refuse_image_options(args: argparse.Namespace) -> None:
    given = [flag for dest, flag in IMAGE_ONLY.items() if getattr(args, dest, None) not in (None, _DEFAULTS.get(dest))]
    if args.emulate_slowdown != 1:
        given.append("--emulate-slowdown")
    if args.cloud_engine != "edgesplit":
        given.append("--cloud-engine")
    if given:
        raise ValueError(
            f"{args.bundle} is a text bundle: {', '.join(given)} take image and tensor bundles; a text bundle takes"
            " --text TEXT / --texts FILE with --split, --cloud, --codec (fp32, fp16), --no-exits, --deadline-ms,"
            " --threshold and --json"
        )


def read_texts(args: argparse.Namespace) -> list[str]:
    """The texts to answer: each ``--text``, then each non-empty line of ``--texts FILE`` (UTF-8)."""
    texts = list(args.text or [])
    if args.texts is not None:
        path = Path(args.texts)
        if not path.is_file():
            raise FileNotFoundError(f"--texts {path}: no such file (give a UTF-8 file, one text per line)")
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError("a text bundle answers texts: give --text TEXT (repeatable) or --texts FILE (one per line)")
    return texts


def _record(text: str, a: Answer, classes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "text": text,
        "label": classes[a.label],
        "confidence": round(a.confidence, 6),
        "source": a.source,
        "exit": a.exit,
        "layers": a.segments_run,
        "split": a.split,
        "bytes_sent": a.bytes_sent,
        "degraded": a.degraded,
        "latency_ms": round(a.latency_ms, 3),
    }


def run_text(args: argparse.Namespace, bundle: Bundle, connect: Callable[[], CloudClient | None]) -> int:
    """Answer every text; print one line each (or JSON with ``--json -``) and the counters. ``connect``: the
    cloud client of ``--cloud`` (called once the options are checked)."""
    _refuse_image_options(args)
    texts = read_texts(args)
    client = connect()
    m = bundle.manifest
    split = args.split if args.split is not None else (m.default_split if client else len(m.segments))
    runtime = TextRuntime(
        bundle, client, split=split, codec=args.codec or "fp32", exits=not args.no_exits, deadline_ms=args.deadline_ms
    )
    records = [_record(t, runtime.infer(t), m.classes) for t in texts]
    stats = runtime.stats()
    report = {"answers": records, "stats": stats}
    to_stdout = args.json is not None and str(args.json) == "-"
    if not to_stdout:
        for r in records:
            where = r["exit"] if r["source"] == "exit" else r["source"]
            degraded = f"\tdegraded: {r['degraded']}" if r["degraded"] else ""
            print(f"{r['label']}\t{r['confidence']:.3f}\t{where}\t{r['text'][:60]}{degraded}")
        summary = f"answers {stats['answers']}, fallbacks {stats['fallbacks']}, breaker {stats['breaker']['state']}"
        print(summary, file=sys.stderr)
    if args.json is not None:
        text = json.dumps(report, indent=2, default=float) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    return 0
