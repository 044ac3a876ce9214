"""The online estimator and threshold controller (edge.audit) and the audit rate limit, on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.audit import Controller, ControllerConfig, Evidence, ExitState, curve, fit
from edge.auditor import AuditConfig, TokenBucket

# Three observations in a window of 100 requests: an audited disagreement (weight 20) at key 0.9, an offloaded
# agreement at 0.8 and an offloaded disagreement at 0.7 (weight 1).
KEYS, WEIGHTS, DISAGREE = np.array([0.8, 0.9, 0.7]), np.array([1.0, 20.0, 1.0]), np.array([False, True, True])


def test_curve_sums_weighted_disagreements_above_each_threshold() -> None:
    c = curve(100, KEYS, WEIGHTS, DISAGREE, z=0.0)
    assert c.keys.tolist() == [0.9, 0.8, 0.7]
    assert c.d.tolist() == [20, 20, 21] and c.v.tolist() == [400, 400, 401] and c.e.tolist() == [20, 21, 22]
    assert c.at(0.95) == (0.0, 0.0)  # nothing exits up there
    assert c.at(0.9) == (0.2, 0.2)  # key >= t exits: 0.9 included
    assert c.at(0.75) == (0.2, 0.2)
    assert c.at(0.7) == pytest.approx((0.21, 0.21))
    # z = 1.645: the bound adds z * sqrt(v) / n = 1.645 * 20 / 100 above 0.75
    assert curve(100, KEYS, WEIGHTS, DISAGREE, z=1.645).at(0.75)[1] == pytest.approx((20 + 1.645 * 20) / 100)


def test_fit_is_just_above_the_first_observation_that_breaks_the_allowance() -> None:
    c = curve(100, KEYS, WEIGHTS, DISAGREE, z=0.0)
    assert fit(c, 0.1, floor=0.5) == np.nextafter(0.9, math.inf)  # the audited disagreement alone is 0.2
    assert fit(c, 0.205, floor=0.5) == np.nextafter(0.7, math.inf)  # 0.2 fits, 0.21 does not
    assert fit(c, 0.3, floor=0.5) == 0.5  # everything fits: the calibrated threshold
    assert fit(c, 0.205, floor=0.8) == 0.8  # never looser than calibrated... nor tighter than needed
    assert fit(curve(0, KEYS[:0], WEIGHTS[:0], DISAGREE[:0], 0.0), 0.01, floor=0.5) == 0.5


def test_evidence_window_counts_every_request_and_drops_old_observations() -> None:
    ev = Evidence(["exit0", "exit1"], window=10)
    for _ in range(4):
        seq = ev.request()
    ev.observe(seq, 1, 0.9, True, 2.0)
    n, keys, weights, disagree = ev.window_of(1)
    assert (n, keys.tolist(), weights.tolist(), disagree.tolist()) == (4, [0.9], [2.0], [True])
    for _ in range(10):
        ev.request()  # request 4 leaves the window of the last 10 (5..14)
    n, keys, _, _ = ev.window_of(1)
    assert n == 10 and keys.size == 0
    assert ev.window_of(0)[1].size == 0
    with pytest.raises(ValueError, match="window"):
        Evidence(["exit0"], window=0)


def _requests(ev: Evidence, until: int) -> int:
    seq = ev.requests
    while seq < until:
        seq = ev.request()
    return seq


def test_controller_tightens_at_once_and_loosens_after_the_hold_in_steps() -> None:
    ev = Evidence(["exit0"], window=100)
    config = ControllerConfig(every=1, hold=150, step=0.5, margin=0.8, warmup=0)
    state = ExitState("exit0", calibrated=0.5)
    ctl = Controller([state], allowances=[0.01], config=config)
    ev.observe(_requests(ev, 100), 0, 0.9, True, 20.0)  # 20 / 100 = 0.2 > 0.01
    (change,) = ctl.update(ev)
    assert (change.kind, change.old, change.request) == ("tighten", 0.5, 100)
    assert change.new == np.nextafter(0.9, math.inf)
    assert state.bound == 0.0  # nothing observed exits above the new threshold
    _requests(ev, 150)
    assert ctl.update(ev) == []  # the disagreement is still in the window
    _requests(ev, 200)  # request 100 left the window, but the hold (150 requests) is not over
    assert ctl.update(ev) == [] and state.threshold == np.nextafter(0.9, math.inf)
    # Offloaded samples (weight 1) between the calibrated and the tightened threshold, all agreeing.
    for key in (0.8, 0.7, 0.6):
        ev.observe(_requests(ev, ev.requests + 10), 0, key, False, 1.0)
    _requests(ev, 250)
    (step,) = ctl.update(ev)
    # half of the 3 observations between the threshold and the calibrated one, rounded up: 2, down to key 0.7
    assert (step.kind, step.new) == ("loosen", 0.7)
    (last,) = ctl.update(ev)
    assert (last.kind, last.new) == ("loosen", 0.5)  # the next step reaches the calibrated threshold
    assert ctl.update(ev) == []  # and stays there


def test_controller_loosens_only_with_margin_and_never_below_calibrated() -> None:
    ev = Evidence(["exit0"], window=1000)
    config = ControllerConfig(every=1, hold=0, step=1.0, margin=0.5, warmup=0)
    state = ExitState("exit0", calibrated=0.5, threshold=0.9)
    ctl = Controller([state], allowances=[0.01], config=config)
    seq = _requests(ev, 1000)
    for _ in range(7):  # 7 offloaded disagreements at key 0.6: 0.007 fits 0.01 but not the margin's 0.005
        ev.observe(seq, 0, 0.6, True, 1.0)
    (change,) = ctl.update(ev)
    assert (change.kind, change.new) == ("loosen", np.nextafter(0.6, math.inf))
    assert state.estimate == 0.0
    ev2 = Evidence(["exit0"], window=1000)
    ev2.observe(_requests(ev2, 1000), 0, 0.3, True, 20.0)  # below the calibrated threshold: not its business
    state2 = ExitState("exit0", calibrated=0.5)
    assert Controller([state2], [0.01], config).update(ev2) == [] and state2.threshold == 0.5


def test_controller_watches_without_moving_when_not_adaptive_and_waits_for_warmup() -> None:
    ev = Evidence(["exit0"], window=100)
    ev.observe(_requests(ev, 50), 0, 0.9, True, 20.0)
    state = ExitState("exit0", calibrated=0.5)
    ctl = Controller([state], [0.01], ControllerConfig(every=1, warmup=100))
    assert ctl.update(ev) == [] and state.threshold == 0.5  # 50 requests < warmup
    assert state.estimate == pytest.approx(0.4) and state.agreement == 0.0
    _requests(ev, 100)
    assert ctl.update(ev, adapt=False) == [] and state.threshold == 0.5 and state.bound == pytest.approx(0.2)
    assert [c.kind for c in ctl.update(ev)] == ["tighten"]
    assert not ctl.due(ev)
    ev.observe(100, 0, 0.8, False, 1.0)
    assert ctl.due(ev)


def test_token_bucket_with_a_clock_passed_in() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 0.25
    assert not bucket.take()  # half a token
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    now[0] = 100.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]  # never more than the burst


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rate": 0}, "audit rate"), ({"rate": 1.5}, "audit rate"), ({"max_rps": 0}, "max_rps"),
     ({"queue": 0}, "queue"), ({"budget": 1.0}, "budget")],
)  # fmt: skip
def test_bad_audit_settings_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AuditConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"step": 0}, "step"), ({"margin": 1.5}, "margin"), ({"confidence": 0.4}, "confidence"), ({"every": 0}, "every")],
)
def test_bad_controller_settings_are_named(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ControllerConfig(**kwargs)  # type: ignore[arg-type]


def test_edge_cli_audit_flags() -> None:
    import argparse

    from edge.cli import _audit_config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--bundle", "b"]
    assert _audit_config(parser.parse_args(base)) is None
    config = _audit_config(parser.parse_args([*base, "--audit-rate", "0.05", "--adaptive-thresholds"]))
    assert config is not None and (config.rate, config.max_rps, config.adaptive) == (0.05, 20.0, True)
    with pytest.raises(ValueError, match="--adaptive-thresholds needs --audit-rate"):
        _audit_config(parser.parse_args([*base, "--adaptive-thresholds"]))
