"""Named network profiles (bandwidth and round-trip time) and the toxics that make a proxy behave like them.

The uplink figures are the average uplink bandwidths that Neurosurgeon (Kang et al., ASPLOS 2017) used for
its cloud-edge partitioning study: 3G 1.1 Mbit/s, LTE 5.85 Mbit/s, Wi-Fi 18.88 Mbit/s (rounded to 18.9 here).
The round-trip times are representative values chosen here, kept moderate so tests stay quick: 3G 150 ms,
4G 60 ms, Wi-Fi 20 ms. The same bandwidth is used downstream unless a profile states a ``downlink_mbit``.

A profile becomes four toxics: per stream, a ``bandwidth`` toxic then a ``latency`` toxic of half the RTT
(± ``jitter_ms``), with integer attributes so a real Toxiproxy accepts them too. Their names start with
``profile_``, so applying another profile replaces them and leaves other toxics alone.

Example:
    >>> profile = parse_profile("4g")
    >>> [(t.name, dict(t.attributes)) for t in profile_toxics(profile)][:2]
    [('profile_bandwidth_upstream', {'rate': 731}), ('profile_latency_upstream', {'latency': 30, 'jitter': 0})]
    >>> parse_profile("10mbit/40ms/5ms")
    Profile(bandwidth_mbit=10.0, rtt_ms=40.0, jitter_ms=5.0, downlink_mbit=None, name='10mbit/40ms/5ms')
    >>> len(profile_toxics(Profile(bandwidth_mbit=50, rtt_ms=10, jitter_ms=2)))
    4
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from netsim.errors import BadRequestError
from netsim.proxy import Proxy
from netsim.toxics import STREAMS, Toxic

__all__ = ["PROFILES", "PROFILE_PREFIX", "Profile", "apply_profile", "parse_profile", "profile_toxics"]

PROFILE_PREFIX = "profile_"

_SPEC = re.compile(
    r"(?P<bw>\d+(?:\.\d+)?)(?P<bw_unit>kbit|mbit|gbit)/(?P<rtt>\d+(?:\.\d+)?)(?P<rtt_unit>ms|s)"
    r"(?:/(?P<jitter>\d+(?:\.\d+)?)(?P<jitter_unit>ms|s))?",
    re.IGNORECASE,
)
_MBIT = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_MS = {"ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Profile:
    """A network: ``bandwidth_mbit`` uplink (client → server), ``rtt_ms`` round trip, ``jitter_ms`` per direction.

    ``downlink_mbit`` (server → client) defaults to the uplink figure.
    """

    bandwidth_mbit: float
    rtt_ms: float
    jitter_ms: float = 0.0
    downlink_mbit: float | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("bandwidth_mbit", "downlink_mbit"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadRequestError(f"profile {self.name!r}: {key} must be > 0 Mbit/s, got {value!r}")
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise BadRequestError(f"profile {self.name!r}: rtt_ms must be >= 0, got {self.rtt_ms!r}")
        if not 0 <= self.jitter_ms <= self.rtt_ms / 2:
            raise BadRequestError(
                f"profile {self.name!r}: jitter_ms must be from 0 to half the RTT ({self.rtt_ms / 2:g}), "
                f"got {self.jitter_ms!r}"
            )

    def rate_kb_s(self, stream: str) -> int:
        """Toxiproxy's bandwidth ``rate`` for a stream: kilobytes (1000 bytes) per second, at least 1."""
        mbit = self.bandwidth_mbit if stream == "upstream" else (self.downlink_mbit or self.bandwidth_mbit)
        return max(1, round(mbit * 125))


PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "3g": Profile(bandwidth_mbit=1.1, rtt_ms=150, name="3g"),
        "4g": Profile(bandwidth_mbit=5.85, rtt_ms=60, name="4g"),
        "wifi": Profile(bandwidth_mbit=18.9, rtt_ms=20, name="wifi"),
    }
)
"""The named profiles (see the module docstring for the sources)."""


def parse_profile(spec: str) -> Profile:
    """A named profile (``3g``, ``4g``, ``wifi``) or a custom ``BANDWIDTH/RTT[/JITTER]`` such as ``10mbit/40ms``."""
    if spec.lower() in PROFILES:
        return PROFILES[spec.lower()]
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise BadRequestError(
            f"unknown network profile {spec!r}; valid: {', '.join(PROFILES)} or BANDWIDTH/RTT[/JITTER] "
            "with kbit|mbit|gbit and ms|s, e.g. 10mbit/40ms or 500kbit/300ms/20ms"
        )
    jitter = float(match["jitter"]) * _MS[match["jitter_unit"].lower()] if match["jitter"] else 0.0
    return Profile(
        bandwidth_mbit=float(match["bw"]) * _MBIT[match["bw_unit"].lower()],
        rtt_ms=float(match["rtt"]) * _MS[match["rtt_unit"].lower()],
        jitter_ms=jitter,
        name=spec,
    )


def profile_toxics(profile: Profile) -> list[Toxic]:
    """Per stream: a bandwidth toxic, then a latency toxic of half the RTT (± jitter)."""
    toxics = []
    for stream in STREAMS:
        bandwidth = {"rate": profile.rate_kb_s(stream)}
        toxics.append(Toxic("bandwidth", stream, bandwidth, f"{PROFILE_PREFIX}bandwidth_{stream}"))
        latency = {"latency": round(profile.rtt_ms / 2), "jitter": round(profile.jitter_ms)}
        toxics.append(Toxic("latency", stream, latency, f"{PROFILE_PREFIX}latency_{stream}"))
    return toxics


def apply_profile(proxy: Proxy, profile: Profile | str) -> list[Toxic]:
    """Replace ``proxy``'s ``profile_*`` toxics with ``profile``'s (other toxics stay); returns the new ones."""
    profile = parse_profile(profile) if isinstance(profile, str) else profile
    for toxic in proxy.toxics():
        if toxic.name.startswith(PROFILE_PREFIX):
            proxy.remove_toxic(toxic.name)
    return [proxy.add_toxic(toxic) for toxic in profile_toxics(profile)]
