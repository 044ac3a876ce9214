"""The emulated slow device: every run takes ``slowdown`` times its median time on the host (injected clock); named
devices and their factor; the radio energy models."""

from __future__ import annotations

from typing import Any

import pytest

from edge.device import SlowSession, slowed
from edge.devices import DEVICES, device, emulation_factor, manifest_factor, measure_reference_ms
from edge.energy import link_type_of, radio_model


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds * 0.6  # sleep may wake early: the session must wait again for the rest


class _Session:
    """Takes ``costs[i]`` seconds of the fake clock on its i-th run (the last one from then on)."""

    def __init__(self, clock: _Clock, *costs: float) -> None:
        self.clock, self.costs, self.feeds = clock, list(costs), []

    def run(self, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        self.feeds.append(input_feed)
        self.clock.now += self.costs[min(len(self.feeds), len(self.costs)) - 1]
        return ["out"]

    def get_inputs(self) -> list[str]:
        return ["x"]


@pytest.mark.parametrize("slowdown", [1.0, 2.5, 10.0])
def test_a_run_takes_slowdown_times_the_median_host_time(slowdown: float) -> None:
    clock = _Clock()
    inner = _Session(clock, 0.009, 0.002, 0.002, 0.003, 0.002)  # a slow first run, then 2 ms, one 3 ms outlier
    session = SlowSession(inner, slowdown, clock=clock, sleep=clock.sleep, calibration_runs=5)
    for _ in range(3):
        start = clock.now
        assert session.run(None, {"x": 1}) == ["out"]
        if session.device_s is not None and len(inner.feeds) > 6:
            assert clock.now - start == pytest.approx(0.002 * slowdown)  # the median, scaled; no noise
    assert session.device_s == pytest.approx(0.002 * slowdown)
    assert len(inner.feeds) == 5 + 3 and inner.feeds[-1] == {"x": 1} and session.get_inputs() == ["x"]


def test_a_given_device_time_is_kept_and_the_host_is_not_timed() -> None:
    """The profile's device ms (slowed(..., device_ms)): the device the planner was told about is the one that runs."""
    clock = _Clock()
    inner = _Session(clock, 0.002)
    session = SlowSession(inner, 1000, clock=clock, sleep=clock.sleep, device_s=0.5)
    start = clock.now
    session.run(None, {"x": 1})
    assert clock.now - start == pytest.approx(0.5) and len(inner.feeds) == 1  # one real run, no calibration
    assert slowed(inner, 1000, device_ms=250.0).device_s == pytest.approx(0.25)


def test_a_host_hiccup_is_not_scaled() -> None:
    clock = _Clock()
    inner = _Session(clock, *[0.001] * 6, 0.05, 0.001)  # the 7th run (the 2nd call) hiccups for 50 ms
    session = SlowSession(inner, 10, clock=clock, sleep=clock.sleep, calibration_runs=5)
    session.run(None, {"x": 1})
    start = clock.now
    session.run(None, {"x": 1})
    assert clock.now - start == pytest.approx(0.05)  # the hiccup itself, not 10 x 50 ms
    start = clock.now
    session.run(None, {"x": 1})
    assert clock.now - start == pytest.approx(0.01)


def test_slowdown_one_is_the_session_itself() -> None:
    inner = _Session(_Clock(), 0.001)
    assert slowed(inner, 1) is inner
    assert isinstance(slowed(inner, 3), SlowSession)


@pytest.mark.parametrize("slowdown", [0.5, 0.0, float("nan"), float("inf")])
def test_a_device_faster_than_the_host_is_refused(slowdown: float) -> None:
    with pytest.raises(ValueError, match="slowdown is a factor >= 1"):
        SlowSession(_Session(_Clock(), 0.001), slowdown)


# Named devices: published reference latencies, the factor, the manifest record (edge.devices); radio energy.


def test_every_device_cites_a_published_reference_latency() -> None:
    assert {"rpi4", "jetson-nano", "sd660", "cortex-m4"} <= set(DEVICES)
    for profile in DEVICES.values():
        assert 1 in profile.reference  # the edge's default thread count is always published
        for threads, ms in profile.reference.items():
            assert f"{ms:g}" in profile.citation and ms > 0 and threads >= 1
        assert ("ncnn" in profile.citation or "MLPerf Tiny" in profile.citation) and profile.power_citation
    mcu = device("mcu")
    assert mcu.reference_model == "mobilenet_v1_025_96" and mcu.compute_w == pytest.approx(0.0403)
    assert mcu.emulation(1, 0.2)["factor"] == pytest.approx(3003.0) and "600.6" in mcu.citation
    assert device("RPi4").reference_ms(1) == 93.48 and device("jetson-nano").reference_ms(4) == 33.83
    assert device("phone") is DEVICES["sd660"]


def test_an_unknown_device_or_thread_count_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown device 'pi9'; valid devices: rpi4, jetson-nano, sd660"):
        device("pi9")
    with pytest.raises(ValueError, match=r"at \[1, 4\] thread\(s\), not 2"):
        device("rpi4").reference_ms(2)


def test_the_factor_is_the_published_latency_over_the_hosts() -> None:
    assert emulation_factor(93.48, 7.79) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="cannot emulate that device"):
        emulation_factor(10.0, 20.0)
    with pytest.raises(ValueError, match="must be > 0 ms"):
        emulation_factor(10.0, 0.0)
    record = device("rpi4").emulation(1, 9.348)
    assert record["factor"] == pytest.approx(10.0) and record["device_ms"] == 93.48 and record["host_ms"] == 9.348
    assert record["name"] == "rpi4" and record["threads"] == 1 and "ncnn" in record["citation"]


class _Input:
    name, shape = "x", ["batch", 3, 224, 224]


class _RefSession:
    """The reference model on a fake clock: each run takes the next of ``costs`` seconds."""

    def __init__(self, clock: _Clock, costs: list[float]) -> None:
        self.clock, self.costs, self.shapes = clock, costs, []

    def run(self, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> list[Any]:
        self.shapes.append(input_feed["x"].shape)
        self.clock.now += self.costs[len(self.shapes) - 1]
        return []

    def get_inputs(self) -> list[Any]:
        return [_Input()]


def test_the_host_reference_latency_is_the_median_of_warm_runs() -> None:
    clock = _Clock()
    session = _RefSession(clock, [1.0, 1.0, 0.007, 0.009, 0.008, 0.5, 0.008])  # 2 warm-ups, then a 500 ms hiccup
    assert measure_reference_ms(session, runs=5, warmup=2, clock=clock) == pytest.approx(8.0)
    assert session.shapes[0] == (1, 3, 224, 224)  # a dynamic batch is fed one sample


def test_the_edge_reads_the_factor_the_profile_recorded() -> None:
    profile = {"device": device("jetson-nano").emulation(1, 9.399)}
    assert manifest_factor(profile, "jetson-nano") == pytest.approx(10.0)
    with pytest.raises(ValueError, match="profiled for device 'jetson-nano', not 'rpi4'"):
        manifest_factor(profile, "rpi4")
    with pytest.raises(ValueError, match="not profiled for a device; run `edgesplit profile --bundle DIR --device"):
        manifest_factor({"segment_ms": [1.0]}, "rpi4")
    with pytest.raises(ValueError, match="valid devices"):
        manifest_factor(profile, "toaster")


def test_radio_energy_is_the_published_arithmetic() -> None:
    g3 = radio_model("3g", 1.1e6)
    assert g3.mj_per_byte == pytest.approx(0.025) and g3.mj_per_transfer == pytest.approx(3500 + 620 * 12.5)
    wifi = radio_model("WiFi", 18.9e6)
    assert wifi.energy_mj(10_000) == pytest.approx(0.007 * 10_000 + 5900)
    lte = radio_model("4g", 5.85e6)  # (438.39 x 5.85 + 1288.04) mW for 8 / 5.85e6 s per byte
    assert lte.mj_per_byte == pytest.approx((438.39 * 5.85 + 1288.04) * 8 / 5.85e6)
    assert lte.mj_per_transfer == pytest.approx(1210.7 * 0.2601 + 1060.0 * 11.576)
    assert radio_model("4g", 5.85e6, warm=True).mj_per_transfer == 0 == radio_model("3g", 1e6, True).mj_per_transfer
    assert link_type_of("4g") == "4g" and link_type_of("10mbit/40ms") == "wifi" and link_type_of("x", "3g") == "3g"
    with pytest.raises(ValueError, match="unknown link type 'gsm'; valid: 3g, 4g, wifi"):
        radio_model("gsm", 1e6)


def test_an_answers_energy_is_compute_for_its_own_time_and_the_radio_for_an_offload() -> None:
    from types import SimpleNamespace

    from edge.energy import RadioModel, answer_energy_mj

    radio = RadioModel("test", 0.01, 100.0, "hand-made")
    local = SimpleNamespace(source="exit", rpc_ms=0.0, bytes_sent=0)
    offload = SimpleNamespace(source="cloud", rpc_ms=30.0, bytes_sent=1000)
    assert answer_energy_mj(local, 50.0, 2.0, radio) == pytest.approx(100.0)  # type: ignore[arg-type]
    # 2 W x (50 - 30) ms on the device + 0.01 mJ x (1000 + 64) bytes + 100 mJ per transfer
    assert answer_energy_mj(offload, 50.0, 2.0, radio, 64) == pytest.approx(40.0 + 10.64 + 100.0)  # type: ignore[arg-type]
