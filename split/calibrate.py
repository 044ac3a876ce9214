"""Per-exit threshold calibration on the calibration split, within an accuracy budget.

Exits are calibrated in order, greedily: each takes the most permissive threshold that keeps the hybrid's
calibration accuracy (earlier exits fixed, every later sample answered by the final classifier) at least
``accuracy_full - budget``. Earlier exits are cheaper, so they get first call on the budget. The test split is
never looked at here; reports state the test outcome as it is.

The loss measured on the calibration split is an estimate, and an optimistic one: the thresholds were chosen on
the very samples that measure them. With ``confidence`` above 0.5 the budget must hold for a one-sided upper
confidence bound of the loss instead of the point estimate. The loss is a paired difference (hybrid vs. full model
on the same samples), so its variance comes from the discordant samples only, as in McNemar's test: with ``b``
samples the hybrid gets right and the full model wrong, and ``c`` the other way round, the bound is
``(c - b + z * sqrt(b + c)) / n`` with ``z`` the normal quantile of ``confidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from edge.policy import Criterion, confident

__all__ = ["NEVER", "Calibration", "calibrate", "cascade"]

# A threshold no score reaches: the exit never fires.
NEVER = {"max_softmax": 2.0, "entropy": -1.0}


@dataclass(frozen=True)
class Calibration:
    """The chosen thresholds (by exit name) with per-exit statistics and the calibration-split summary."""

    thresholds: dict[str, float]
    stats: dict[str, dict[str, Any]]
    accuracy_full: float
    accuracy_hybrid: float
    budget: float
    extra: dict[str, Any] = field(default_factory=dict)


def _best_count(gain: np.ndarray, scores: np.ndarray, slack: int, spent: int, discordant: int, z: float) -> int:
    """Largest m (on a tie boundary of the sorted ``scores``) whose loss bound stays within ``slack`` samples.

    The loss after taking the first m is ``spent - cumsum(gain)[m-1]`` samples, its bound adds
    ``z * sqrt(discordant + cumsum(|gain|)[m-1])``.
    """
    loss = spent - np.cumsum(gain)
    bound = loss + z * np.sqrt(discordant + np.cumsum(np.abs(gain))) if z else loss
    boundary = np.append(scores[1:] != scores[:-1], True)  # m = i + 1 allowed only where the score changes
    ok = np.nonzero((bound <= slack + 1e-9) & boundary)[0]
    return int(ok[-1]) + 1 if len(ok) else 0


def calibrate(
    labels: np.ndarray,
    final_probs: np.ndarray,
    exit_probs: Sequence[np.ndarray],
    criteria: Sequence[Criterion],
    names: Sequence[str],
    budget: float = 0.01,
    confidence: float = 0.5,
) -> Calibration:
    """Pick a threshold per exit so that calibration accuracy stays within ``budget`` (a fraction) of the full model's.

    Args:
        labels: ``(N,)`` true classes of the calibration split.
        final_probs: ``(N, C)`` the full model's probabilities.
        exit_probs: one ``(N, C)`` array per exit, in exit order.
        criteria: the criterion of each exit.
        names: the name of each exit.
        budget: the allowed accuracy loss, as a fraction (0.01 is one percentage point).
        confidence: how sure the loss must be within ``budget``; 0.5 uses the point estimate, 0.95 a one-sided
            95% upper bound (see the module docstring).
    """
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence is a probability in [0.5, 1), got {confidence}")
    z = NormalDist().inv_cdf(confidence)
    n = len(labels)
    final_ok = final_probs.argmax(-1) == labels
    correct = int(final_ok.sum())
    slack = correct - int(np.ceil((correct / n - budget) * n - 1e-9))
    spent = discordant = 0
    remaining = np.ones(n, dtype=bool)
    thresholds: dict[str, float] = {}
    stats: dict[str, dict[str, Any]] = {}
    for probs, crit, name in zip(exit_probs, criteria, names, strict=True):
        idx = np.nonzero(remaining)[0]
        raw = crit.score(probs[idx])
        sign = 1.0 if crit.higher_is_confident else -1.0
        order = np.argsort(-sign * raw, kind="stable")
        exit_ok = probs[idx].argmax(-1) == labels[idx]
        gain = exit_ok[order].astype(int) - final_ok[idx][order].astype(int)
        m = _best_count(gain, raw[order], slack, spent, discordant, z)
        spent -= int(gain[:m].sum())
        discordant += int(np.abs(gain[:m]).sum())
        thresholds[name] = float(raw[order][m - 1]) if m else NEVER[crit.name]
        taken = idx[order[:m]]
        remaining[taken] = False
        stats[name] = {
            "reached": len(idx),
            "exited": m,
            "exit_rate": m / n,
            "accuracy_exited": float(exit_ok[order[:m]].mean()) if m else None,
        }
    preds, _ = cascade(final_probs, exit_probs, criteria, [thresholds[k] for k in names])
    extra = {"confidence": confidence, "loss_bound": float((spent + z * np.sqrt(discordant)) / n)}
    return Calibration(thresholds, stats, correct / n, float((preds == labels).mean()), budget, extra)


def cascade(
    final_probs: np.ndarray,
    exit_probs: Sequence[np.ndarray],
    criteria: Sequence[Criterion],
    thresholds: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """What the edge would answer: predictions and, per sample, the exit taken (``len(exits)`` = no exit)."""
    n = len(final_probs)
    taken = np.full(n, len(exit_probs), dtype=np.int64)
    preds = final_probs.argmax(-1)
    for k in reversed(range(len(exit_probs))):
        mask = confident(criteria[k], criteria[k].score(exit_probs[k]), thresholds[k])
        preds = np.where(mask, exit_probs[k].argmax(-1), preds)
        taken = np.where(mask, k, taken)
    return preds, taken
