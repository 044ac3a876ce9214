"""Energy per inference: the device's compute and, per link type, the radio (torch-free, pure arithmetic).

An inference costs ``compute_w x edge compute time`` plus, when it is offloaded, the radio's energy for that
transfer: ``mj_per_byte x bytes`` (request and reply) plus ``mj_per_transfer`` (the radio's ramp-up and the
tail it lingers in at high power after the transfer). The link types are netsim's profile names:

* ``3g`` and ``wifi``: Balasubramanian, Balasubramanian, Venkataramani, "Energy consumption in mobile phones: a
  measurement study and implications for network applications", ACM IMC 2009, table 1 (their phone's measured
  model, x in KB; KB is taken as 1000 bytes here). 3G: transfer energy R(x) = 0.025 x + 3.5 J, tail energy
  0.62 J/s for a tail time of 12.5 s, so 7.75 J of tail per transfer; per transfer 3.5 + 7.75 = 11.25 J.
  Wi-Fi: R(x) = 0.007 x + 5.9 J and no tail; the paper's 5.9 J is scanning and associating, which a device
  that stays associated pays once, so with ``warm=True`` it is left out (and for 3G the ramp and tail too).
* ``4g`` (LTE): Huang, Qian, Hao, Gerber, Mao, Sen, Spatscheck, "A close examination of performance and power
  characteristics of 4G LTE networks", ACM MobiSys 2012, tables 3 and 4: uplink power
  ``alpha_u x throughput + beta`` with alpha_u = 438.39 mW/Mbit/s, beta = 1288.04 mW; promotion 260.1 ms at
  1210.7 mW; tail 11.576 s at 1060.0 mW. Sending x bytes at the link's uplink rate u Mbit/s then costs
  ``(alpha_u u + beta) x 8 x / (u 1e6)``, and a transfer from idle 1210.7 x 0.2601 + 1060.0 x 11.576 mJ.
  NOTE: these LTE figures are quoted from the paper as the author of this module knows it; the search index
  available here held no copy of the paper to check them against (the 3G/Wi-Fi figures were checked).

``warm=True`` models a radio that a steady stream of requests keeps in its high-power state: no ramp, tail or
association per transfer, only the per-byte energy. The default (``warm=False``) is one isolated transfer, the
form the studies measured.

Example:
    >>> r = radio_model("3g", 1.1e6)
    >>> round(r.energy_mj(1000), 3)      # 1 KB: 25 mJ + the 11.25 J ramp and tail
    11275.0
    >>> round(radio_model("3g", 1.1e6, warm=True).energy_mj(1000), 3)
    25.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.runtime import Answer

__all__ = ["LINK_TYPES", "RadioModel", "answer_energy_mj", "link_type_of", "radio_model"]

LINK_TYPES = ("3g", "4g", "wifi")
"""The radio models, named as netsim's network profiles."""

_BALASUBRAMANIAN = "Balasubramanian et al., IMC 2009, table 1"
_HUANG = "Huang et al., MobiSys 2012, tables 3-4 (unverified here)"

# Balasubramanian et al. 2009: J per KB, fixed J per transfer (R(x) intercept), tail J/s, tail s.
_3G = (0.025, 3.5, 0.62, 12.5)
_WIFI = (0.007, 5.9, 0.0, 0.0)
# Huang et al. 2012 (LTE): alpha_u mW/(Mbit/s), beta mW, promotion mW and s, tail mW and s.
_LTE = (438.39, 1288.04, 1210.7, 0.2601, 1060.0, 11.576)


@dataclass(frozen=True)
class RadioModel:
    """A link's radio: energy per byte sent or received and the fixed energy per transfer (ramp + tail)."""

    link: str
    mj_per_byte: float
    mj_per_transfer: float
    citation: str

    def __post_init__(self) -> None:
        if self.mj_per_byte < 0 or self.mj_per_transfer < 0:
            raise ValueError(f"radio {self.link!r}: energies must be >= 0 mJ, got {self}")

    def energy_mj(self, nbytes: float) -> float:
        """The radio's energy (mJ) for one transfer of ``nbytes`` bytes in all."""
        return self.mj_per_byte * nbytes + self.mj_per_transfer


def radio_model(link: str, uplink_bps: float, warm: bool = False) -> RadioModel:
    """The published radio model of ``link`` (``3g``, ``4g``, ``wifi``) on a link of ``uplink_bps`` bits/s.

    Only LTE's per-byte energy depends on the rate (its power model is in throughput); 3G's and Wi-Fi's were
    measured per KB. ``warm``: the radio is already up (no ramp, tail or association per transfer).
    """
    key = link.strip().lower()
    if key == "3g" or key == "wifi":
        per_kb, fixed, tail_w, tail_s = _3G if key == "3g" else _WIFI
        per_transfer = 0.0 if warm else 1e3 * (fixed + tail_w * tail_s)
        return RadioModel(key, per_kb, per_transfer, _BALASUBRAMANIAN)  # J/KB = mJ/byte (KB = 1000 bytes)
    if key in ("4g", "lte"):
        if not uplink_bps > 0:
            raise ValueError(f"the LTE radio model needs the uplink rate > 0 bit/s, got {uplink_bps!r}")
        alpha_u, beta, promo_mw, promo_s, tail_mw, tail_s = _LTE
        mbit = uplink_bps / 1e6
        per_byte = (alpha_u * mbit + beta) * 8 / (mbit * 1e6)  # mW x s per byte = mJ per byte
        per_transfer = 0.0 if warm else promo_mw * promo_s + tail_mw * tail_s
        return RadioModel("4g", per_byte, per_transfer, _HUANG)
    raise ValueError(f"unknown link type {link!r}; valid: {', '.join(LINK_TYPES)}")


def link_type_of(network: str, default: str = "wifi") -> str:
    """The link type of a netsim network name (``3g``, ``4g``, ``wifi``); a ``BANDWIDTH/RTT`` spec has none,
    so it gets ``default`` (``wifi`` unless the caller names one)."""
    key = network.strip().lower()
    return key if key in LINK_TYPES else default


def answer_energy_mj(
    answer: Answer, latency_ms: float, compute_w: float, radio: RadioModel, reply_bytes: float = 0.0
) -> float:
    """One measured answer's energy (mJ): compute power x the device's own time (all of ``latency_ms`` but the
    round trip, for an offload) plus, for an offload, the radio's energy for the request and the reply."""
    if answer.source != "cloud":
        return compute_w * latency_ms
    return compute_w * max(latency_ms - answer.rpc_ms, 0.0) + radio.energy_mj(answer.bytes_sent + reply_bytes)
