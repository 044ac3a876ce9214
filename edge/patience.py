"""Patience-based early exit (PABEE, Zhou et al., 2020): answer at the first layer whose prediction has not
changed for ``patience`` consecutive layers.

Unlike a threshold on one exit's scores, the criterion is stateful: it compares each exit's answer with the ones
before. :class:`PatienceCounter` is the edge's per-request state; :func:`patience_layers` the batch form that
calibration (in ``split/``) and the benchmarks use, so both decide the same way. numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PatienceCounter", "patience_layers"]


def _check(patience: int) -> None:
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience is a whole number of layers >= 1, got {patience!r}")


class PatienceCounter:
    """Counts how many consecutive layers agreed with the one before; :meth:`step` says when to stop."""

    def __init__(self, patience: int) -> None:
        _check(patience)
        self.patience = patience
        self._label: int | None = None
        self._streak = 0

    def step(self, label: int) -> bool:
        """Feed the next layer's label; True when it is the ``patience``-th in a row equal to its predecessor."""
        self._streak = self._streak + 1 if label == self._label else 0
        self._label = label
        return self._streak >= self.patience


def patience_layers(preds: np.ndarray, patience: int) -> np.ndarray:
    """``preds`` ``[layers, N]`` (each exit's label) -> per sample the layer that answers (the last if none)."""
    _check(patience)
    layers, n = preds.shape
    answer = np.full(n, layers - 1, dtype=np.int64)
    streak = np.zeros(n, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    for i in range(1, layers - 1):
        streak = np.where(preds[i] == preds[i - 1], streak + 1, 0)
        stop = open_ & (streak >= patience)
        answer[stop] = i
        open_ &= ~stop
    return answer
