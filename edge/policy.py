"""Exit criteria: when is an exit's answer confident enough to return it without going further?

A criterion turns class probabilities into a score and compares it with a calibrated threshold. Both work on
batches (numpy, no torch), so calibration in ``split/`` and the runtime on the device use the same code.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

__all__ = ["CRITERIA", "Criterion", "Entropy", "MaxSoftmax", "confident", "criterion", "softmax", "top_class"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z, dtype=np.float32)
    return e / e.sum(axis=-1, keepdims=True)


_SHORT = 64
"""Up to this many classes, :func:`top_class` computes in Python floats: on a few classes each numpy call costs
more than the arithmetic, the more so right after ONNX Runtime has had the caches."""


def top_class(logits: np.ndarray) -> tuple[np.ndarray, int, float]:
    """One sample's logits (1-D) -> its probabilities (float32), label and confidence (the label's probability).

    The edge's per-request path. The label is the first largest logit, which is the largest probability (two
    logits a float32 rounding apart may round to one probability; the logit decides). Up to :data:`_SHORT`
    classes the softmax is computed in Python floats and rounded to float32 once (it then agrees with
    :func:`softmax` to within a float32 rounding): numpy's per-call cost on ten numbers is most of the work.
    """
    if logits.size > _SHORT:
        probs = softmax(logits[None])[0]
        label = int(probs.argmax())
        return probs, label, float(probs[label])
    values = logits.tolist()
    top = max(values)
    label = values.index(top)
    exp = math.exp
    exps = [exp(v - top) for v in values]
    scale = 1.0 / sum(exps)
    probs = np.array([e * scale for e in exps], dtype=np.float32)
    return probs, label, probs.item(label)


class Criterion(Protocol):
    """Scores probabilities; ``higher_is_confident`` says which side of the threshold exits."""

    name: str
    higher_is_confident: bool

    def score(self, probs: np.ndarray) -> np.ndarray:
        """One score per sample."""
        ...


class MaxSoftmax:
    """The top class probability; exit when it is at least the threshold."""

    name = "max_softmax"
    higher_is_confident = True

    def score(self, probs: np.ndarray) -> np.ndarray:
        """Max probability per sample."""
        return probs.max(axis=-1)


class Entropy:
    """The entropy of the distribution (nats); exit when it is at most the threshold (BranchyNet's criterion)."""

    name = "entropy"
    higher_is_confident = False

    def score(self, probs: np.ndarray) -> np.ndarray:
        """Entropy per sample."""
        return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=-1)


CRITERIA: dict[str, Criterion] = {c.name: c for c in (MaxSoftmax(), Entropy())}


def criterion(name: str) -> Criterion:
    """The criterion called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown exit criterion {name!r}; valid criteria: {sorted(CRITERIA)}") from None


def confident(crit: Criterion, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: which samples may exit at ``threshold``."""
    return scores >= threshold if crit.higher_is_confident else scores <= threshold
