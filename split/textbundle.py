"""A text bundle from labelled texts in one call (``edgesplit export --data FILE.csv|FILE.jsonl``): train the
tokenizer, the encoder and its exits, calibrate entropy thresholds and the patience on the calibration split to the
budget, export (:mod:`split.textexport`), and report the test split's outcome as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protos.bundle import Bundle
from split.textcal import calibrate_entropy, calibrate_patience, entropy_hybrid, patience_hybrid
from split.textdata import TextData
from split.textexport import export_text_bundle
from split.texttrain import TextConfig, layer_probs, train_text

__all__ = ["make_text_bundle"]


def make_text_bundle(
    data: TextData, cfg: TextConfig, out: Path, *, budget: float, confidence: float = 0.5, policy: str = "entropy"
) -> tuple[Bundle, dict[str, Any]]:
    """Write the bundle ``out``; returns it and the test split's summary per policy (``budget``: a fraction)."""
    if policy not in ("entropy", "patience"):
        raise ValueError(f"unknown text exit policy {policy!r}; valid policies: ['entropy', 'patience']")
    model, tok = train_text(cfg, data)
    cal, test = layer_probs(model, tok, data.cal[0]), layer_probs(model, tok, data.test[0])
    entropy = calibrate_entropy(data.cal[1], cal, budget, confidence)
    patience, _ = calibrate_patience(data.cal[1], cal, budget, confidence)
    export_text_bundle(
        model,
        tok,
        out,
        model_name=data.name,
        classes=data.classes,
        thresholds=entropy.thresholds,
        calibration=entropy.stats,
        policy={"criterion": policy, "patience": patience},
    )
    depth = len(test)
    report = {
        "full_accuracy": float((test[-1].argmax(-1) == data.test[1]).mean()),
        "entropy": entropy_hybrid(test, entropy.thresholds).summary(data.test[1], depth),
        "patience": {"patience": patience, **patience_hybrid(test, patience).summary(data.test[1], depth)},
    }
    return Bundle.load(out), report
