"""Exit thresholds kept honest at run time: evidence from the cloud's answers, an estimate per exit, a controller.

Every sample that gets the full model's answer (offloaded: the cloud's; on an edge-only route: the edge's own full
model; or an *audit*, a random fraction of exited samples also sent to the cloud, :mod:`edge.auditor`) yields, for
every exit head the edge evaluated on it, an observation: the exit, its confidence key (the criterion's score, negated
where lower is confident, so that a sample exits at key threshold ``t`` when ``key >= t``), whether the exit's label
disagrees with the full model's, and a weight ``1/pi``: ``pi`` is the probability that the sample got the full model's
answer at all (1 for an offloaded sample, the effective audit rate for an exited one). Weighting by ``1/pi``
(Horvitz-Thompson) makes the estimate unbiased although offloaded samples are exactly the unconfident ones: every
sample that reached the exit has a known, non-zero chance of being observed, whichever way it went.

Per exit, over the last ``window`` requests (all requests are counted, so the denominator ``n`` is known exactly and
the exits' estimates add up to the hybrid's disagreement with the full model), for any key threshold ``t``::

    d(t) = sum w * disagree * [key >= t]        v(t) = sum w**2 * disagree * [key >= t]
    bound(t) = (d(t) + z * sqrt(v(t))) / n

the McNemar bound offline calibration uses (``split/calibrate.py``: ``(c - b + z sqrt(b + c)) / n``) with ``b = 0``
(online the reference is the full model itself) generalised to weights. The :class:`Controller` compares the bound at
the threshold in force with the exit's allowance (its share of the calibration budget): over it, the threshold
tightens at once to the most permissive one whose bound fits (never looser than calibrated); when a looser one fits
with a margin (hysteresis), it loosens a step at a time after a hold. Pure logic on numpy and the stdlib; the caller
passes request counts in, and nothing here reads a clock.

Example:
    >>> ev = Evidence(["exit0"], window=100)
    >>> for _ in range(100): seq = ev.request()
    >>> ev.observe(seq, 0, 0.95, True, 20.0)             # an audited exited sample the cloud disagreed with
    >>> ctl = Controller([ExitState("exit0", 0.7)], allowances=[0.1], config=ControllerConfig(every=1))
    >>> [(c.exit, c.kind, round(c.new, 4)) for c in ctl.update(ev)]
    [('exit0', 'tighten', 0.95)]
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["Change", "Controller", "ControllerConfig", "Curve", "Evidence", "ExitState", "curve", "fit"]


class Evidence:
    """Observations per exit over a sliding window of requests; thread-safe, O(1) per call on the answer path.

    Args:
        exits: the exits' names, in order (observations name an exit by its position).
        window: how many of the latest requests the estimates cover.
    """

    def __init__(self, exits: Sequence[str], window: int) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of requests >= 1, got {window!r}")
        self.exits, self.window = tuple(exits), window
        self._lock = threading.Lock()
        self._seq = 0
        self._observed = 0
        self._obs: list[deque[tuple[int, float, float, bool]]] = [deque() for _ in self.exits]

    @property
    def requests(self) -> int:
        """Requests counted so far."""
        return self._seq

    @property
    def observed(self) -> int:
        """Observations recorded so far (all exits)."""
        return self._observed

    def request(self) -> int:
        """Count one request; its sequence number (1, 2, ...), which its observations carry."""
        with self._lock:
            self._seq += 1
            return self._seq

    def observe(self, seq: int, exit: int, key: float, disagree: bool, weight: float) -> None:
        """One observation of request ``seq`` at exit number ``exit``."""
        with self._lock:
            self._obs[exit].append((seq, key, weight, disagree))
            self._observed += 1

    def window_of(self, exit: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """``(n, keys, weights, disagree)`` of exit number ``exit`` over the window (older observations are
        dropped here, off the answer path)."""
        with self._lock:
            n = min(self._seq, self.window)
            obs = self._obs[exit]
            oldest = self._seq - self.window
            while obs and obs[0][0] <= oldest:
                obs.popleft()
            rows = list(obs)
        if not rows:
            empty = np.zeros(0)
            return n, empty, empty, np.zeros(0, dtype=bool)
        _, keys, weights, disagree = zip(*rows, strict=True)
        return n, np.array(keys), np.array(weights), np.array(disagree, dtype=bool)


@dataclass(frozen=True)
class Curve:
    """The disagreement estimate as a function of the key threshold: ``keys`` sorted descending; ``d[j]`` and
    ``v[j]`` sum the first ``j + 1`` observations (those a threshold of ``keys[j]`` lets exit), ``e[j]`` their
    weights (the estimated number of samples that exit there)."""

    n: int
    keys: np.ndarray
    d: np.ndarray
    v: np.ndarray
    e: np.ndarray
    z: float

    def at(self, t: float) -> tuple[float, float]:
        """``(estimate, bound)`` of the disagreement per request among samples that exit at key threshold ``t``."""
        j = int(np.searchsorted(-self.keys, -t, side="right"))  # observations with key >= t
        if j == 0 or self.n == 0:
            return 0.0, 0.0
        d, v = float(self.d[j - 1]), float(self.v[j - 1])
        return d / self.n, (d + self.z * math.sqrt(v)) / self.n

    def exited(self, t: float) -> int:
        """Observations a key threshold ``t`` lets exit."""
        return int(np.searchsorted(-self.keys, -t, side="right"))


def curve(n: int, keys: np.ndarray, weights: np.ndarray, disagree: np.ndarray, z: float) -> Curve:
    """The :class:`Curve` of one exit's window: ``n`` requests, its observations."""
    order = np.argsort(-keys, kind="stable")
    wd = (weights * disagree)[order]
    w = weights[order]
    return Curve(n, keys[order], np.cumsum(wd), np.cumsum(wd * w), np.cumsum(w), z)


def fit(c: Curve, allowance: float, floor: float) -> float:
    """The most permissive key threshold, at least ``floor`` (the calibrated one), whose bound is within
    ``allowance``: just above the first observation (by key, descending) that would break it, or ``floor``."""
    if c.n == 0 or len(c.keys) == 0:
        return floor
    bound = (c.d + c.z * np.sqrt(c.v)) / c.n
    over = np.nonzero(bound > allowance + 1e-12)[0]
    if not len(over) or c.keys[over[0]] < floor:
        return floor
    return float(np.nextafter(c.keys[over[0]], math.inf))  # excludes it and every tie


@dataclass(frozen=True)
class ControllerConfig:
    """How the controller reacts.

    Args:
        every: evaluate after this many new observations (all exits together).
        hold: after a tightening, this many requests before any loosening.
        step: each loosening admits this fraction of the observations between the threshold in force and the
            looser one that fits (0 < step <= 1: 1 jumps there).
        margin: loosen only as far as the bound stays within ``margin`` x the allowance (hysteresis, < 1).
        confidence: the bound's one-sided confidence (0.5: the point estimate, z = 0).
        warmup: no decision before this many requests (the calibrated thresholds stand meanwhile).
    """

    every: int = 50
    hold: int = 200
    step: float = 0.5
    margin: float = 0.8
    confidence: float = 0.5
    warmup: int = 200

    def __post_init__(self) -> None:
        for name in ("every", "hold", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "every" else 0):
                raise ValueError(f"{name} must be a whole number of {'observations' if name == 'every' else 'requests'}"
                                 f" (>= {1 if name == 'every' else 0}), got {value!r}")  # fmt: skip
        if not 0 < self.step <= 1:
            raise ValueError(f"step is a fraction in (0, 1], got {self.step!r}")
        if not 0 < self.margin <= 1:
            raise ValueError(f"margin is a fraction in (0, 1], got {self.margin!r}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence is a probability in [0.5, 1), got {self.confidence!r}")

    @property
    def z(self) -> float:
        """The normal quantile of :attr:`confidence`."""
        return NormalDist().inv_cdf(self.confidence)


@dataclass
class ExitState:
    """One exit under control: its calibrated key threshold, the one in force, and the latest estimate."""

    name: str
    calibrated: float
    threshold: float = math.nan
    changed_at: int = 0
    estimate: float = 0.0
    bound: float = 0.0
    agreement: float = math.nan
    observations: int = 0

    def __post_init__(self) -> None:
        if math.isnan(self.threshold):
            self.threshold = self.calibrated


@dataclass(frozen=True)
class Change:
    """A threshold moved: ``kind`` is ``"tighten"`` or ``"loosen"``; ``old`` and ``new`` are key thresholds."""

    exit: str
    kind: str
    old: float
    new: float
    bound: float
    allowance: float
    request: int


class Controller:
    """Keeps each exit's key threshold where its disagreement bound fits its allowance.

    Args:
        exits: the exits' states, in :class:`Evidence` order, thresholds as confidence keys.
        allowances: per exit, the disagreement allowed per request (the exits' shares of the budget).
        config: how it reacts.
    """

    def __init__(self, exits: Sequence[ExitState], allowances: Sequence[float], config: ControllerConfig) -> None:
        if len(exits) != len(allowances):
            raise ValueError(f"{len(exits)} exits but {len(allowances)} allowances")
        self.exits, self.allowances, self.config = list(exits), [float(a) for a in allowances], config
        self._seen = 0
        self._lock = threading.Lock()

    def due(self, evidence: Evidence) -> bool:
        """Whether ``every`` new observations have come since the last evaluation."""
        return evidence.observed - self._seen >= self.config.every

    def update(self, evidence: Evidence, adapt: bool = True) -> list[Change]:
        """Refresh every exit's estimate; with ``adapt``, move thresholds; the changes made."""
        with self._lock:
            self._seen = evidence.observed
            seq = evidence.requests
            changes = []
            for k, state in enumerate(self.exits):
                c = curve(*evidence.window_of(k), self.config.z)
                change = self._one(state, c, self.allowances[k], seq, adapt)
                if change is not None:
                    changes.append(change)
            return changes

    def _one(self, s: ExitState, c: Curve, allowance: float, seq: int, adapt: bool) -> Change | None:
        s.estimate, s.bound = c.at(s.threshold)
        s.observations = len(c.keys)
        s.agreement = _agreement(c, s.threshold)
        if not adapt or seq < self.config.warmup or c.n == 0:
            return None
        old = s.threshold
        if s.bound > allowance + 1e-12:
            new, kind = fit(c, allowance, s.calibrated), "tighten"
        elif seq - s.changed_at >= self.config.hold and s.threshold > s.calibrated:
            target = fit(c, self.config.margin * allowance, s.calibrated)
            if target >= s.threshold:
                return None
            new, kind = _step(c, s.threshold, target, self.config.step), "loosen"
        else:
            return None
        s.threshold = new
        if kind == "tighten":
            s.changed_at = seq  # the hold runs from the last tightening; loosening goes a step per evaluation
        s.estimate, s.bound = c.at(new)
        s.agreement = _agreement(c, new)
        return Change(s.name, kind, old, new, s.bound, allowance, seq)


def _agreement(c: Curve, t: float) -> float:
    """The estimated agreement with the full model among the samples that exit at ``t`` (NaN: none observed)."""
    j = c.exited(t)
    return math.nan if j == 0 else 1.0 - float(c.d[j - 1]) / float(c.e[j - 1])


def _step(c: Curve, current: float, target: float, step: float) -> float:
    """A key threshold part of the way from ``current`` toward the looser ``target``: it admits ``step`` of the
    observations between the two (at least one more), or ``target`` itself when that is all of them."""
    have, want = c.exited(current), c.exited(target)
    take = have + max(1, math.ceil(step * (want - have)))
    if take >= want:
        return target
    return float(c.keys[take - 1])
