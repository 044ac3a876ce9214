"""netsim's pure parts: profiles, toxic validation and what each toxic stage does to pieces (no sockets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from netsim.profiles import PROFILES, Profile, parse_profile, profile_toxics
from netsim.stages import CLOSE, EOF, STAGES, Piece, make_stage
from netsim.toxics import TOXIC_TYPES, Toxic


class _FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _FakeConnection:
    """Records what stages ask of their connection."""

    def __init__(self) -> None:
        self.timers: list[_FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        self.timers.append(_FakeTimer(delay, callback))
        return self.timers[-1]

    def close(self) -> None:
        pass

    def reset(self) -> None:
        pass


def _dues(pieces: list[Piece]) -> list[float]:
    return [due for due, _, _ in pieces]


# --- profiles -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mbit", "rate", "latency"), [("3g", 1.1, 138, 75), ("4g", 5.85, 731, 30), ("wifi", 18.9, 2362, 10)]
)
def test_named_profiles_become_bandwidth_and_half_rtt_latency_per_stream(
    name: str, mbit: float, rate: int, latency: int
) -> None:
    profile = PROFILES[name]
    assert profile.bandwidth_mbit == mbit
    toxics = {toxic.name: toxic for toxic in profile_toxics(profile)}
    assert sorted(toxics) == [
        "profile_bandwidth_downstream",
        "profile_bandwidth_upstream",
        "profile_latency_downstream",
        "profile_latency_upstream",
    ]
    for stream in ("upstream", "downstream"):
        assert toxics[f"profile_bandwidth_{stream}"].attributes["rate"] == rate  # KB/s = Mbit/s * 125
        assert toxics[f"profile_latency_{stream}"].attributes["latency"] == latency
        assert toxics[f"profile_latency_{stream}"].stream == stream


def test_custom_profile_specs_parse_with_units() -> None:
    assert parse_profile("10mbit/40ms") == Profile(bandwidth_mbit=10.0, rtt_ms=40.0, name="10mbit/40ms")
    assert parse_profile("500kbit/1s/20ms") == Profile(0.5, 1000.0, jitter_ms=20.0, name="500kbit/1s/20ms")
    assert parse_profile("WiFi") is PROFILES["wifi"]


def test_downlink_figure_is_used_downstream() -> None:
    toxics = {t.name: t for t in profile_toxics(Profile(bandwidth_mbit=2, rtt_ms=10, downlink_mbit=8))}
    assert toxics["profile_bandwidth_upstream"].attributes["rate"] == 250
    assert toxics["profile_bandwidth_downstream"].attributes["rate"] == 1000


def test_bad_profile_spec_lists_the_valid_forms() -> None:
    with pytest.raises(ValueError, match=r"3g, 4g, wifi or BANDWIDTH/RTT\[/JITTER\].*10mbit/40ms"):
        parse_profile("fast")
    with pytest.raises(ValueError, match="bandwidth_mbit must be > 0"):
        Profile(bandwidth_mbit=0, rtt_ms=10)
    with pytest.raises(ValueError, match="jitter_ms must be from 0 to half the RTT"):
        parse_profile("1mbit/10ms/6ms")


# --- toxics ---------------------------------------------------------------------------------------------------


def test_toxic_defaults_follow_toxiproxy() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 50}})
    assert toxic.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 50, "jitter": 0},
    }


def test_toxic_update_merges_attributes_and_keeps_identity() -> None:
    toxic = Toxic("latency", "upstream", {"latency": 50, "jitter": 5}, name="lag")
    updated = toxic.updated({"attributes": {"latency": 80}, "toxicity": 0.5})
    assert dict(updated.attributes) == {"latency": 80, "jitter": 5}
    assert (updated.name, updated.stream, updated.toxicity) == ("lag", "upstream", 0.5)
    with pytest.raises(ValueError, match=r"cannot change toxic 'lag'.s stream"):
        toxic.updated({"stream": "downstream"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "laggy"}, "unknown toxic type 'laggy'; valid types: latency, bandwidth, timeout, reset_peer"),
        ({"type": "latency", "stream": "sideways"}, "valid streams: upstream, downstream"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity 1.5 is invalid; it is a probability from 0 to 1"),
        ({"type": "latency", "attributes": {"delay": 5}}, "attribute.*delay.*valid attributes: latency, jitter"),
        ({"type": "bandwidth", "attributes": {"rate": -1}}, "rate=-1 is invalid; it must be a number >= 0"),
        ({"type": "limit_data", "attributes": {"bytes": 1.5}}, "whole number"),
        ({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}}, "size_variation < average_size"),
        ({"type": "latency", "colour": "red"}, "unknown field.*colour.*valid fields: name, type"),
        ({"stream": "upstream"}, "no 'type'; valid types"),
    ],
)
def test_invalid_toxics_say_what_is_valid(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Toxic.from_json(data)


def test_every_toxic_type_has_a_stage() -> None:
    assert set(STAGES) == set(TOXIC_TYPES)


# --- stages ---------------------------------------------------------------------------------------------------


def test_latency_is_pipelined_from_each_arrival() -> None:
    stage = make_stage(Toxic("latency", attributes={"latency": 100}), _FakeConnection())
    # Arrivals 0, 10 ms and 30 ms leave 100 ms after each, not 100 ms after the one ahead of them.
    out = stage.feed([(0.0, b"a", "")]) + stage.feed([(0.01, b"b", "")]) + stage.feed([(0.03, b"c", "")])
    assert _dues(out) == pytest.approx([0.1, 0.11, 0.13])
    assert b"".join(data for _, data, _ in out) == b"abc"


def test_latency_with_jitter_never_reorders() -> None:
    stage = make_stage(Toxic("latency", attributes={"latency": 50, "jitter": 40}), _FakeConnection())
    out = [piece for i in range(200) for piece in stage.feed([(i * 0.001, bytes([i]), "")])]
    dues = _dues(out)
    assert dues == sorted(dues)
    assert bytes(data[0] for _, data, _ in out) == bytes(range(200))
    assert all(due - i * 0.001 >= 0.01 - 1e-9 for i, due in enumerate(dues))  # at least latency - jitter
    assert max(due - i * 0.001 for i, due in enumerate(dues)) > 0.05  # jitter is applied


def test_bandwidth_paces_large_chunks_in_small_slices() -> None:
    stage = make_stage(Toxic("bandwidth", attributes={"rate": 100}), _FakeConnection())  # 100 KB/s
    out = stage.feed([(1.0, bytes(10_000), "")])
    assert len(out) == 10 and all(len(data) == 1000 for _, data, _ in out)  # 10 ms worth each
    assert _dues(out) == pytest.approx([1.0 + 0.01 * (i + 1) for i in range(10)])
    later = stage.feed([(1.05, bytes(1000), "")])  # arrives while the link is busy: queued behind
    assert _dues(later) == pytest.approx([1.11])
    idle = stage.feed([(5.0, bytes(1000), "")])  # after an idle spell: starts at once
    assert _dues(idle) == pytest.approx([5.01])


def test_limit_data_truncates_then_closes() -> None:
    stage = make_stage(Toxic("limit_data", attributes={"bytes": 5}), _FakeConnection())
    assert stage.feed([(0.0, b"abc", "")]) == [(0.0, b"abc", "")]
    assert stage.feed([(1.0, b"defgh", "")]) == [(1.0, b"de", ""), (1.0, b"", CLOSE)]
    assert stage.feed([(2.0, b"more", "")]) == []


def test_slicer_cuts_chunks_with_delays() -> None:
    toxic = Toxic("slicer", attributes={"average_size": 10, "size_variation": 2, "delay": 1000})
    out = make_stage(toxic, _FakeConnection()).feed([(0.0, bytes(range(100)), "")])
    assert b"".join(data for _, data, _ in out) == bytes(range(100))
    assert all(8 <= len(data) <= 12 for _, data, _ in out[:-1])
    assert _dues(out) == pytest.approx([i * 0.001 for i in range(len(out))])


def test_timeout_drops_data_and_arms_a_close_timer_that_updates_restart() -> None:
    connection = _FakeConnection()
    stage = make_stage(Toxic("timeout", attributes={"timeout": 200}), connection)
    assert stage.feed([(0.0, b"data", ""), (0.0, b"", EOF)]) == [(0.0, b"", EOF)]
    assert [timer.delay for timer in connection.timers] == [0.2]
    stage.update(stage.toxic.updated({"attributes": {"timeout": 0}}))  # 0: a blackhole, no timer
    assert connection.timers[0].cancelled and len(connection.timers) == 1


def test_reset_peer_starts_its_timer_on_the_first_data() -> None:
    connection = _FakeConnection()
    stage = make_stage(Toxic("reset_peer", attributes={"timeout": 50}), connection)
    assert connection.timers == []
    assert stage.feed([(0.0, b"data", "")]) == []
    assert stage.feed([(0.01, b"more", "")]) == []
    assert [timer.delay for timer in connection.timers] == [0.05]


def test_toxicity_zero_never_applies() -> None:
    stage = make_stage(Toxic("latency", attributes={"latency": 100}, toxicity=0.0), _FakeConnection())
    assert stage.feed([(0.0, b"a", "")]) == [(0.0, b"a", "")]


def test_netsim_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, netsim, netsim.cli, netsim.api, netsim.sim; "
        "bad = {'torch', 'numpy', 'grpc'} & set(sys.modules); assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert result.returncode == 0, result.stderr
