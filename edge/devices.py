"""Named edge devices, each defined by a published latency of one reference model on it (torch-free).

An emulated device is "this host, ``factor`` times slower" (:mod:`edge.device`). A bare factor means something only
on the host it was chosen on; a named device means the same on any host: the device's published latency of a
reference model divided by this host's latency of the same model gives the factor. The reference model is
MobileNetV2, width 1.0, 224x224 float32, batch 1 (``split.reference`` exports it to ONNX; the profiler times it
with ONNX Runtime at the edge's thread count and writes the factor into the manifest, which is where the edge
reads it: the edge never needs torch).

Every latency below is ncnn's own ``benchncnn`` (fp32, CPU only, ``gpu_device = -1``) for ``mobilenet_v2`` at
224x224 (``benchmark/benchncnn.cpp``: ``ncnn::Mat(224, 224, 3)``), the ``avg`` of the published run, from the
Tencent/ncnn repository's ``benchmark/README.md``. One source, one runtime, one method for all devices. The
emulated device is therefore "that device running MobileNetV2 as fast as ncnn runs it there"; this host runs
ONNX Runtime, so operator-level differences between the runtimes are not emulated, only the overall speed.

Compute power is the device's published power figure (cited per device); a device without one has
``compute_w = None`` and energy planning then needs ``--compute-w``.

Example:
    >>> rpi = device("rpi4")
    >>> rpi.reference_ms(1), round(emulation_factor(rpi.reference_ms(1), 9.348), 1)
    (93.48, 10.0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from edge.device import Session

__all__ = [
    "DEVICES",
    "REFERENCE_INPUT",
    "REFERENCE_MODEL",
    "REFERENCE_MODELS",
    "DeviceProfile",
    "device",
    "emulation_factor",
    "manifest_factor",
    "measure_reference_ms",
]

REFERENCE_MODEL = "MobileNetV2 1.0, 224x224, float32, batch 1"
REFERENCE_INPUT = (1, 3, 224, 224)  # the shape a reference session without a static one is fed

REFERENCE_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "mobilenet_v2_224": REFERENCE_MODEL,
        "mobilenet_v1_025_96": "MobileNetV1 0.25, 96x96, 2 classes, batch 1 (MLPerf Tiny's Visual Wake Words model)",
    }
)
"""Reference models by key (``split.reference`` exports each): the phone/board CPUs are defined by MobileNetV2 at
224 px, a microcontroller by the model MLPerf Tiny measures on it."""

_NCNN = "Tencent/ncnn benchmark/README.md (benchncnn, fp32 CPU, mobilenet_v2 224x224, avg)"


@dataclass(frozen=True)
class DeviceProfile:
    """A device: its published reference latency per thread count, the citation, and its compute power.

    ``reference``: {threads: ms} as published (only the thread counts the source measured). ``compute_w``: watts
    while computing (``None`` where no figure is published).
    """

    name: str
    description: str
    reference: Mapping[int, float]
    citation: str
    compute_w: float | None = None
    power_citation: str = ""
    runtime: str = "ncnn benchncnn (fp32, CPU)"
    aliases: tuple[str, ...] = field(default=())
    reference_model: str = "mobilenet_v2_224"

    def __post_init__(self) -> None:
        if not self.reference or any(t < 1 or not ms > 0 for t, ms in self.reference.items()):
            raise ValueError(f"device {self.name!r}: reference is {{threads >= 1: ms > 0}}, got {self.reference}")
        if self.reference_model not in REFERENCE_MODELS:
            raise ValueError(f"device {self.name!r}: reference_model is one of {list(REFERENCE_MODELS)}")
        if self.compute_w is not None and not self.compute_w > 0:
            raise ValueError(f"device {self.name!r}: compute_w must be > 0 W, got {self.compute_w}")

    def reference_ms(self, threads: int) -> float:
        """The published reference latency at ``threads`` threads; ``ValueError`` naming those published."""
        if threads not in self.reference:
            raise ValueError(
                f"device {self.name!r} has a published reference latency at {sorted(self.reference)} thread(s),"
                f" not {threads}; run the edge with --edge-threads {min(self.reference)}"
            )
        return float(self.reference[threads])

    def emulation(self, threads: int, host_ms: float) -> dict[str, Any]:
        """What a manifest's profile records: the device, the factor, both reference latencies, the citation."""
        device_ms = self.reference_ms(threads)
        return {
            "name": self.name,
            "description": self.description,
            "factor": emulation_factor(device_ms, host_ms),
            "reference_model": REFERENCE_MODELS[self.reference_model],
            "reference_key": self.reference_model,
            "threads": threads,
            "device_ms": device_ms,
            "host_ms": host_ms,
            "runtime": self.runtime,
            "citation": self.citation,
            "compute_w": self.compute_w,
            "power_citation": self.power_citation,
        }


DEVICES: Mapping[str, DeviceProfile] = MappingProxyType(
    {
        "rpi4": DeviceProfile(
            "rpi4",
            "Raspberry Pi 4 Model B, BCM2711, 4x Cortex-A72 1.8 GHz",
            {1: 93.48, 4: 61.88},
            f"{_NCNN}, section 'Raspberry Pi 4 Model B Broadcom BCM2711B0, Cortex-A72 (ARMv8) (1.8GHz x 4)':"
            " `./benchncnn 10 1 0 -1 1` mobilenet_v2 avg 93.48 ms (1 thread), `./benchncnn 10 4 0 -1 1`"
            " avg 61.88 ms (4 threads); ncnn commit cc37c1099 (2023-06-15, 'update rpi4b benchmark')",
            compute_w=3.06,
            power_citation="Raspberry Pi documentation, power supply table: Raspberry Pi 4 Model B 'typical"
            " bare-board active current consumption' 600 mA at the required 5.1 V supply = 3.06 W (a typical"
            " active figure, not a measurement under full CPU load)",
        ),
        "jetson-nano": DeviceProfile(
            "jetson-nano",
            "NVIDIA Jetson Nano, CPU only: 4x Cortex-A57 (the GPU is not used)",
            {1: 93.99, 4: 33.83},
            f"{_NCNN}, section 'NVIDIA Jetson Nano', CPU runs (gpu_device = -1): mobilenet_v2 avg 93.99 ms"
            " (num_threads = 1), avg 33.83 ms (num_threads = 4); ncnn commit 71f377e9e (2022-01-17, 'update"
            " benchmark from Q-engineering')",
            compute_w=10.0,
            power_citation="NVIDIA Jetson Nano power modes (nvpmodel): 10 W (MAXN) and 5 W; the benchmark does"
            " not state its mode, so the 10 W budget is used: an upper bound, not a measured draw",
        ),
        "sd660": DeviceProfile(
            "sd660",
            "mid-range phone CPU: Qualcomm Snapdragon 660 (4x Kryo 260 2.2 GHz + 4x 1.84 GHz), as in the"
            " Xiaomi Redmi Note 7 ('lavender')",
            {1: 76.38, 8: 34.54},
            f"{_NCNN}, section 'Qualcomm SDM660 Snapdragon 660 (Kyro260 2.2GHz x 4 + Kyro260 1.84GHz x 4 +"
            " Adreno 512)', device 'lavender': `./benchncnn 4 1 2 -1 1` (1 thread, big cores) mobilenet_v2"
            " avg 76.38 ms; `./benchncnn 8 8 0 -1 1` (8 threads) avg 34.54 ms; ncnn commit 178797390"
            " (2020-06-12, 'add qcom660 benchmark')",
            compute_w=None,
            power_citation="no published CPU power figure found for this device: give --compute-w",
            aliases=("phone",),
        ),
        "cortex-m4": DeviceProfile(
            "cortex-m4",
            "microcontroller: STM32L4R5ZI (Arm Cortex-M4F, 120 MHz, 640 KB SRAM) on a Nucleo-L4R5ZI board",
            {1: 600.6},
            "MLPerf Tiny v0.5, closed division, reference submission (mlcommons/tiny_results_v0.5,"
            " closed/reference/results/Nucleo-L4R5ZI/vww/performance/results.txt): Visual Wake Words (MobileNetV1"
            " 0.25, 96x96, int8, TensorFlow Lite for Microcontrollers 2.3.1), median throughput 1.665 inf./s ="
            " 600.6 ms per inference",
            compute_w=0.0403,
            power_citation="the same submission's energy run (closed/reference/results/Nucleo-L4R5ZI/vww/energy/"
            "results.txt): 40.31-40.32 mW during inference at 1.8 V, 24,312.6 uJ per inference",
            runtime="TensorFlow Lite for Microcontrollers 2.3.1 (int8)",
            aliases=("mcu",),
            reference_model="mobilenet_v1_025_96",
        ),
    }
)
"""The named devices (sources in each profile's ``citation``; the README lists them too)."""


def device(name: str) -> DeviceProfile:
    """The profile named ``name`` (or an alias); ``ValueError`` listing the valid names otherwise."""
    key = name.strip().lower()
    for profile in DEVICES.values():
        if key == profile.name or key in profile.aliases:
            return profile
    raise ValueError(
        f"unknown device {name!r}; valid devices: {', '.join(DEVICES)} (aliases: phone = sd660, mcu = cortex-m4)"
    )


def emulation_factor(device_ms: float, host_ms: float) -> float:
    """``device_ms / host_ms``: how many times slower than this host the device is (``ValueError`` below 1)."""
    if not (math.isfinite(host_ms) and host_ms > 0):
        raise ValueError(f"the host's reference latency must be > 0 ms, got {host_ms!r}")
    factor = device_ms / host_ms
    if factor < 1:
        raise ValueError(
            f"this host runs the reference model in {host_ms:.2f} ms, slower than the device's {device_ms:.2f} ms:"
            " it cannot emulate that device (the emulation only slows the host down)"
        )
    return factor


def manifest_factor(profile: Mapping[str, Any] | None, name: str) -> float:
    """The factor a bundle was profiled with for device ``name`` (``edgesplit edge --device NAME``).

    The edge reads it from the manifest instead of timing the reference model itself (that needs the model, which
    only ``split`` can export): the factor holds on the host that profiled the bundle, where the emulation runs.
    """
    wanted = device(name).name
    recorded = (profile or {}).get("device")
    if not recorded:
        raise ValueError(
            f"the bundle was not profiled for a device; run `edgesplit profile --bundle DIR --device {wanted}`"
        )
    if recorded.get("name") != wanted:
        raise ValueError(
            f"the bundle was profiled for device {recorded.get('name')!r}, not {wanted!r}; use --device"
            f" {recorded.get('name')} or re-profile with `edgesplit profile --bundle DIR --device {wanted}`"
        )
    return float(recorded["factor"])


def measure_reference_ms(
    session: Session,
    *,
    runs: int = 21,
    warmup: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median ms of ``runs`` warm runs of ``session`` (the reference model) on a zero input of its shape."""
    spec = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in getattr(spec, "shape", REFERENCE_INPUT))
    feed = {spec.name: np.zeros(shape, np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = clock()
        session.run(None, feed)
        times.append(clock() - start)
    return float(sorted(times)[len(times) // 2] * 1e3)
