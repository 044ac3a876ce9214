"""Calibrating a text model's exits to an accuracy budget, with entropy (DeeBERT) or patience (PABEE).

Both work on every exit's probabilities on the calibration split, ``[layers, N, C]`` (the last layer is the
model's classifier). Entropy thresholds come from :func:`split.calibrate.calibrate` (the same greedy choice and
loss bound as image bundles). Patience has one knob, ``K``: the smallest ``K`` (the most exits) whose loss bound
(the same paired bound, :mod:`split.calibrate`) stays within the budget; without one, ``K = layers - 1``, which
never fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from edge.patience import patience_layers
from edge.policy import Entropy
from split.calibrate import Calibration, calibrate, cascade

__all__ = ["Hybrid", "calibrate_entropy", "calibrate_patience", "entropy_hybrid", "patience_hybrid"]


@dataclass(frozen=True)
class Hybrid:
    """What the device answers under a policy: predictions and, per sample, the layer that answered (0-based)."""

    preds: np.ndarray
    layer: np.ndarray

    def summary(self, labels: np.ndarray, layers: int) -> dict[str, Any]:
        """Accuracy, mean layers run, the share answered before the last layer, and per-layer exit rates."""
        return {
            "accuracy": float((self.preds == labels).mean()),
            "mean_layers": float((self.layer + 1).mean()),
            "exited_early": float((self.layer < layers - 1).mean()),
            "exit_rate": [float((self.layer == k).mean()) for k in range(layers)],
        }


def _names(layers: int) -> list[str]:
    return [f"e{k}" for k in range(layers - 1)]


def calibrate_entropy(labels: np.ndarray, probs: np.ndarray, budget: float, confidence: float = 0.5) -> Calibration:
    """Entropy thresholds for exits ``e0`` … ``e{layers-2}``."""
    layers = len(probs)
    return calibrate(
        labels, probs[-1], list(probs[:-1]), [Entropy()] * (layers - 1), _names(layers), budget, confidence
    )


def entropy_hybrid(probs: np.ndarray, thresholds: dict[str, float]) -> Hybrid:
    """The device's answers with entropy thresholds."""
    layers = len(probs)
    preds, taken = cascade(
        probs[-1], list(probs[:-1]), [Entropy()] * (layers - 1), [thresholds[n] for n in _names(layers)]
    )
    return Hybrid(preds, np.where(taken == layers - 1, layers - 1, taken))


def patience_hybrid(probs: np.ndarray, patience: int) -> Hybrid:
    """The device's answers with patience ``K``."""
    preds = probs.argmax(-1)
    layer = patience_layers(preds, patience)
    return Hybrid(preds[layer, np.arange(preds.shape[1])], layer)


def calibrate_patience(
    labels: np.ndarray, probs: np.ndarray, budget: float, confidence: float = 0.5
) -> tuple[int, dict[str, Any]]:
    """The smallest patience within ``budget`` (a fraction) and its calibration-split summary."""
    z = NormalDist().inv_cdf(confidence)
    layers, n = len(probs), len(labels)
    full_ok = probs[-1].argmax(-1) == labels
    for k in range(1, layers):
        hybrid = patience_hybrid(probs, k)
        ok = hybrid.preds == labels
        b, c = int((ok & ~full_ok).sum()), int((~ok & full_ok).sum())
        bound = (c - b + z * np.sqrt(b + c)) / n
        if bound <= budget + 1e-9 or k == layers - 1:
            return k, {"patience": k, "loss_bound": float(bound), **hybrid.summary(labels, layers)}
    raise AssertionError("unreachable: the loop returns at k = layers - 1")
