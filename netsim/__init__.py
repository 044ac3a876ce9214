"""netsim: a small network simulator for cloud-edge tests; a TCP proxy with Toxiproxy's toxics and HTTP API.

Standard library only (asyncio): no torch, no numpy. A real Toxiproxy can stand in for it, since the toxics,
their attributes and the API follow Toxiproxy's. :class:`NetSim` runs it in a background thread for tests and
benchmarks; ``edgesplit netsim`` (:mod:`netsim.cli`) runs it as a process.

Example:
    >>> from netsim import NetSim, Toxic
    >>> with NetSim() as net:  # doctest: +SKIP
    ...     target = net.create_proxy("cloud", upstream="127.0.0.1:8001")  # connect here instead
    ...     net.add_toxic("cloud", Toxic("latency", "downstream", {"latency": 50}))
    ...     net.apply_profile("cloud", "3g")
"""

from netsim.api import ApiServer
from netsim.collection import ProxyCollection
from netsim.errors import BadRequestError, ConflictError, NetSimError, NotFoundError
from netsim.profiles import PROFILES, Profile, apply_profile, parse_profile, profile_toxics
from netsim.proxy import Proxy, ProxyConfig
from netsim.sim import NetSim
from netsim.toxics import STREAMS, TOXIC_TYPES, Toxic

__all__ = [
    "PROFILES",
    "STREAMS",
    "TOXIC_TYPES",
    "ApiServer",
    "BadRequestError",
    "ConflictError",
    "NetSim",
    "NetSimError",
    "NotFoundError",
    "Profile",
    "Proxy",
    "ProxyCollection",
    "ProxyConfig",
    "Toxic",
    "apply_profile",
    "parse_profile",
    "profile_toxics",
]
