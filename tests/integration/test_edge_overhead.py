"""edge.overhead: the runtime against its bare sessions (figures only: no timing bound, the machine is shared)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.overhead import edge_overhead, interleaved_us
from edge.runtime import Answer, EdgeRuntime, _local_answer


@pytest.mark.parametrize("exits", [False, True])
def test_edge_overhead_reports_both_sides(bundle, digits, exits: bool) -> None:  # type: ignore[no-untyped-def]
    r = edge_overhead(bundle, digits.x_test[:1], repeats=20, exits=exits)
    assert r["bare_us"] > 0 and r["infer_us"] > 0
    assert r["ratio"] == pytest.approx(r["infer_us"] / r["bare_us"])
    assert r["overhead_us"] == pytest.approx(r["infer_us"] - r["bare_us"])
    if not exits:
        assert (r["segments_run"], r["exit"]) == (len(bundle.manifest.segments), None)
    assert r["exits"] is exits and r["repeats"] == 20 and r["threads"] == 1


def test_edge_overhead_refuses_a_wrong_shape(bundle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="shape"):
        edge_overhead(bundle, np.zeros((3, 3), np.float32), repeats=1)


def test_interleaved_us_runs_every_function() -> None:
    calls = {"a": 0, "b": 0}

    def bump(name: str) -> None:
        calls[name] += 1

    us = interleaved_us({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeats=7, warmup=3)
    assert set(us) == {"a", "b"} and calls == {"a": 10, "b": 10}
    with pytest.raises(ValueError, match="repeats"):
        interleaved_us({"a": lambda: None}, repeats=0)


def test_local_answer_is_an_ordinary_answer() -> None:
    p = np.array([0.25, 0.75], dtype=np.float32)
    fast = _local_answer(1, 0.75, "exit", p, 2, "exit1")
    slow = Answer(1, 0.75, "exit", p, 2, exit="exit1")
    assert dataclasses.asdict(fast).keys() == dataclasses.asdict(slow).keys()
    assert repr(fast) == repr(slow)
    assert dataclasses.replace(fast, degraded="deadline").degraded == "deadline"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.label = 0  # type: ignore[misc]


def test_sessions_are_the_runtime_s(bundle) -> None:  # type: ignore[no-untyped-def]
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    assert runtime.segment_session(0) is runtime._segments[0]
    name = bundle.manifest.exits[0].name
    assert runtime.exit_session(name) is runtime._exits[bundle.manifest.exits[0].after_segment].session
    with pytest.raises(KeyError, match="exits"):
        runtime.exit_session("nope")
