"""Threshold calibration on synthetic cases whose answer is known by hand, and the exit criteria themselves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from edge.policy import Criterion, Entropy, MaxSoftmax, confident, criterion, softmax
from split.calibrate import NEVER, calibrate, cascade

C = 4  # classes in every synthetic case


def _probs(confidence: Sequence[float], predicted: np.ndarray) -> np.ndarray:
    """One row per sample: ``confidence`` on ``predicted``, the rest spread evenly (so argmax is ``predicted``).

    Both criteria rank these rows the same way: higher confidence = higher max softmax = lower entropy.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    assert (conf > 1 / C).all() and (conf <= 1).all()
    rows = np.repeat(((1 - conf) / (C - 1))[:, None], C, axis=1)
    rows[np.arange(len(conf)), predicted] = conf
    return rows


def _case(exit_right: Sequence[bool], confidence: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, final probs, exit probs): the final model is always right; the exit is right where told."""
    n = len(exit_right)
    labels = np.arange(n) % C
    final = _probs([0.9] * n, labels)
    predicted = np.where(exit_right, labels, (labels + 1) % C)
    return labels, final, _probs(confidence, predicted)


# Ten samples, most confident first: right on the first six, wrong on the next four.
RIGHT = [True] * 6 + [False] * 4
CONF = [0.99, 0.97, 0.95, 0.93, 0.91, 0.89, 0.87, 0.85, 0.83, 0.81]


def _exited(crit: Criterion, probs: np.ndarray, threshold: float) -> list[int]:
    return np.nonzero(confident(crit, crit.score(probs), threshold))[0].tolist()


@pytest.mark.parametrize(("budget", "admitted"), [(0.0, 6), (0.1, 7), (0.2, 8)], ids=["0", "0.1", "0.2"])
def test_budget_buys_exactly_its_slack(budget: float, admitted: int) -> None:
    labels, final, probs = _case(RIGHT, CONF)
    crit = MaxSoftmax()
    cal = calibrate(labels, final, [probs], [crit], ["e"], budget=budget)
    assert cal.thresholds["e"] == pytest.approx(CONF[admitted - 1])
    assert _exited(crit, probs, cal.thresholds["e"]) == list(range(admitted))
    assert cal.stats["e"]["exited"] == admitted
    assert cal.stats["e"]["exit_rate"] == pytest.approx(admitted / 10)
    assert cal.stats["e"]["accuracy_exited"] == pytest.approx(min(6, admitted) / admitted)
    assert cal.accuracy_full == 1.0
    assert cal.accuracy_hybrid == pytest.approx(1 - (admitted - 6) / 10)


def test_sample_order_does_not_matter() -> None:
    labels, final, probs = _case(RIGHT, CONF)
    perm = np.random.default_rng(3).permutation(10)
    cal = calibrate(labels[perm], final[perm], [probs[perm]], [MaxSoftmax()], ["e"], budget=0.0)
    assert cal.thresholds["e"] == pytest.approx(CONF[5])
    assert cal.stats["e"]["exited"] == 6


def test_a_tie_on_the_boundary_is_not_split() -> None:
    # Samples 5 and 6 tie; 5 is right and sorts first, 6 is wrong: taking only 5 would cost nothing.
    right = [True] * 6 + [False] * 4
    conf = [0.99, 0.97, 0.95, 0.93, 0.91, 0.88, 0.88, 0.85, 0.83, 0.81]
    labels, final, probs = _case(right, conf)
    crit = MaxSoftmax()
    cal = calibrate(labels, final, [probs], [crit], ["e"], budget=0.0)
    assert cal.thresholds["e"] == pytest.approx(0.91)
    assert _exited(crit, probs, cal.thresholds["e"]) == [0, 1, 2, 3, 4]
    assert cal.stats["e"]["exited"] == 5
    assert cal.accuracy_hybrid == 1.0


def test_a_tie_that_fits_is_taken_whole() -> None:
    right = [True] * 7 + [False] * 3
    conf = [0.99, 0.97, 0.95, 0.93, 0.91, 0.88, 0.88, 0.85, 0.83, 0.81]
    labels, final, probs = _case(right, conf)
    cal = calibrate(labels, final, [probs], [MaxSoftmax()], ["e"], budget=0.0)
    assert _exited(MaxSoftmax(), probs, cal.thresholds["e"]) == list(range(7))


def test_entropy_exits_at_or_below_the_threshold() -> None:
    labels, final, probs = _case(RIGHT, CONF)
    crit = Entropy()
    scores = crit.score(probs)
    assert (np.diff(scores) > 0).all()  # less confident = more entropy
    cal = calibrate(labels, final, [probs], [crit], ["e"], budget=0.0)
    threshold = cal.thresholds["e"]
    assert threshold == pytest.approx(float(scores[5]))
    assert (scores[:6] <= threshold).all() and (scores[6:] > threshold).all()
    assert _exited(crit, probs, threshold) == list(range(6))


@pytest.mark.parametrize("crit", [MaxSoftmax(), Entropy()], ids=lambda c: c.name)
def test_an_exit_that_is_never_good_enough_never_fires(crit: Criterion) -> None:
    labels, final, probs = _case([False] * 10, CONF)
    cal = calibrate(labels, final, [probs], [crit], ["e"], budget=0.0)
    assert cal.thresholds["e"] == NEVER[crit.name]
    assert cal.stats["e"] == {"reached": 10, "exited": 0, "exit_rate": 0.0, "accuracy_exited": None}
    assert _exited(crit, probs, cal.thresholds["e"]) == []
    assert cal.accuracy_hybrid == cal.accuracy_full == 1.0


def test_later_exits_only_see_what_earlier_ones_left() -> None:
    labels, final, first = _case(RIGHT, CONF)
    second = _probs([0.9] * 10, labels)  # right everywhere
    cal = calibrate(labels, final, [first, second], [MaxSoftmax(), MaxSoftmax()], ["a", "b"], budget=0.0)
    assert cal.stats["a"]["exited"] == 6
    assert cal.stats["b"] == {"reached": 4, "exited": 4, "exit_rate": 0.4, "accuracy_exited": 1.0}
    _, taken = cascade(final, [first, second], [MaxSoftmax(), MaxSoftmax()], [cal.thresholds["a"], cal.thresholds["b"]])
    assert taken.tolist() == [0] * 6 + [1] * 4


def _random_case(rng: np.random.Generator, n: int, exits: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    labels = rng.integers(0, C, n)

    def noisy(skill: float) -> np.ndarray:
        probs = softmax(rng.normal(size=(n, C)) + skill * np.eye(C)[labels])
        copied = rng.random(n) < 0.3  # rows copied from other samples: score ties, often with other labels
        probs[copied] = probs[rng.integers(0, n, int(copied.sum()))]
        return probs

    return labels, noisy(2.5), [noisy(float(s)) for s in rng.uniform(0.0, 2.5, exits)]


@pytest.mark.parametrize(("confidence", "admitted"), [(0.5, 95), (0.95, 92)], ids=["point", "95%"])
def test_confidence_keeps_a_margin_for_the_estimate(confidence: float, admitted: int) -> None:
    """100 samples, the exit right on the 90 most confident; budget 5 samples.

    The point estimate spends all 5 on wrong exits. At 95% (z = 1.645) w wrong exits cost
    ``w + 1.645 * sqrt(w)`` (every one is discordant): w = 2 gives 4.33 <= 5, w = 3 gives 5.85 > 5.
    """
    labels, final, probs = _case([True] * 90 + [False] * 10, np.linspace(0.99, 0.3, 100))
    cal = calibrate(labels, final, [probs], [MaxSoftmax()], ["e"], budget=0.05, confidence=confidence)
    assert cal.stats["e"]["exited"] == admitted
    wrong = admitted - 90
    z = 1.6448536269514722 if confidence == 0.95 else 0.0
    assert cal.extra["loss_bound"] == pytest.approx((wrong + z * np.sqrt(wrong)) / 100)
    assert cal.extra["confidence"] == confidence


@pytest.mark.parametrize("confidence", [0.4, 1.0])
def test_confidence_outside_its_range_is_refused(confidence: float) -> None:
    labels, final, probs = _case(RIGHT, CONF)
    with pytest.raises(ValueError, match="confidence"):
        calibrate(labels, final, [probs], [MaxSoftmax()], ["e"], confidence=confidence)


@pytest.mark.parametrize("seed", range(8))
def test_hybrid_accuracy_stays_within_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, exits = int(rng.integers(20, 200)), int(rng.integers(1, 4))
    budget = float(rng.choice([0.0, 0.01, 0.05, 0.1, 0.3]))
    labels, final, exit_probs = _random_case(rng, n, exits)
    crits: list[Criterion] = [MaxSoftmax() if rng.random() < 0.5 else Entropy() for _ in range(exits)]
    names = [f"e{k}" for k in range(exits)]
    confidence = float(rng.choice([0.5, 0.9, 0.99]))
    cal = calibrate(labels, final, exit_probs, crits, names, budget=budget, confidence=confidence)
    assert cal.extra["loss_bound"] <= budget + 1e-9
    preds, taken = cascade(final, exit_probs, crits, [cal.thresholds[k] for k in names])
    hybrid = float((preds == labels).mean())
    assert hybrid == cal.accuracy_hybrid
    assert hybrid >= cal.accuracy_full - budget - 1e-9
    assert [int((taken == k).sum()) for k in range(exits)] == [cal.stats[k]["exited"] for k in names]


@pytest.mark.parametrize("seed", range(4))
def test_one_exit_takes_the_most_it_can(seed: int) -> None:
    """Admitting the next tie group of scores would break the budget."""
    rng = np.random.default_rng(100 + seed)
    labels, final, (probs,) = _random_case(rng, 80, 1)
    crit, budget = MaxSoftmax(), 0.05
    cal = calibrate(labels, final, [probs], [crit], ["e"], budget=budget)
    scores = crit.score(probs)
    lower = scores[scores < cal.thresholds["e"]]
    if len(lower) == 0:
        pytest.skip("every sample already exits")
    preds, _ = cascade(final, [probs], [crit], [float(lower.max())])
    assert float((preds == labels).mean()) < cal.accuracy_full - budget


def test_softmax_rows_sum_to_one() -> None:
    logits = np.random.default_rng(0).normal(scale=5.0, size=(16, 10)).astype(np.float32)
    probs = softmax(logits)
    assert probs.dtype == np.float32 and probs.shape == logits.shape
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-6)
    assert (probs.argmax(-1) == logits.argmax(-1)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_huge_logits(dtype: type) -> None:
    probs = softmax(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=dtype))
    assert np.isfinite(probs).all()
    expected = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)


def test_criterion_lookup() -> None:
    assert criterion("max_softmax").higher_is_confident
    assert not criterion("entropy").higher_is_confident
    with pytest.raises(ValueError, match="'bogus'") as info:
        criterion("bogus")
    assert "max_softmax" in str(info.value) and "entropy" in str(info.value)


def test_scores_by_hand() -> None:
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(MaxSoftmax().score(probs), [1.0, 0.25])
    np.testing.assert_allclose(Entropy().score(probs), [0.0, np.log(4)], atol=1e-9)
