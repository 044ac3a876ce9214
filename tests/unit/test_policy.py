"""The edge's one-sample scoring (edge.policy.top_class) against the batch softmax the calibration uses."""

from __future__ import annotations

import numpy as np
import pytest

from edge.policy import softmax, top_class


@pytest.mark.parametrize("classes", [1, 2, 10, 64, 65, 1000])
def test_top_class_agrees_with_softmax(classes: int) -> None:
    """Probabilities within a float32 rounding of softmax(); the label the first largest probability; the
    confidence that probability."""
    rng = np.random.default_rng(classes)
    for scale in (1.0, 30.0):
        logits = (rng.normal(size=classes) * scale).astype(np.float32)
        probs, label, confidence = top_class(logits)
        assert probs.dtype == np.float32 and probs.shape == (classes,)
        np.testing.assert_allclose(probs, softmax(logits[None])[0], rtol=1e-6, atol=1e-9)
        assert label == int(probs.argmax()) and confidence == float(probs[label])


def test_top_class_breaks_ties_as_argmax() -> None:
    probs, label, confidence = top_class(np.array([0.0, 3.0, 3.0, 1.0], dtype=np.float32))
    assert label == 1 and probs[1] == probs[2] and confidence == float(probs[1])


def test_top_class_is_stable_for_huge_logits() -> None:
    probs, label, confidence = top_class(np.array([1e4, 0.0, -1e4], dtype=np.float32))
    assert label == 0 and confidence == 1.0 and np.isfinite(probs).all()
