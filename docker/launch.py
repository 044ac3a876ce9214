"""Start edgesplit in a container from environment variables (``docker-compose.yml``), so that no code is edited.

    python /app/launch.py edge          # edgesplit edge --listen 0.0.0.0:8000 --metrics 0.0.0.0:9100 ...
    python /app/launch.py adapt         # edgesplit edge --adapt ... over $EDGESPLIT_DATA's test set; prints the plan
    python /app/launch.py netsim        # edgesplit netsim: one proxy per cloud replica, $EDGESPLIT_PROFILE
    python /app/launch.py set-profile 3g   # change every proxy's network profile live, through netsim's HTTP API

Environment (all optional):

===========================  ========================================================================================
``EDGESPLIT_BUNDLE``         the bundle directory in the container (``/bundle``, mounted read-only)
``EDGESPLIT_DATA``           the test set directory: ``x_test.npy``, ``y_test.npy`` (``/data``, read-only)
``EDGESPLIT_CLOUD``          the edge's cloud (``HOST:PORT[,...]``); default: every proxy netsim's API lists
``EDGESPLIT_NETSIM_API``     netsim's API (``http://netsim:8474``)
``EDGESPLIT_CLOUD_ENGINE``   the edge's cloud: ``edgesplit`` (default) or ``triton`` (``--cloud-engine``)
``EDGESPLIT_TRITON_PREFIX``  with ``triton``: the repository's model-name prefix (default: the bundle's model)
``EDGESPLIT_SPLIT``          split point (default: the manifest's)
``EDGESPLIT_CODEC``          wire codec, e.g. ``int8+zstd`` (default: the manifest's)
``EDGESPLIT_THRESHOLDS``     exit thresholds, e.g. ``exit0=0.9,exit2=0.6`` (default: the calibrated ones)
``EDGESPLIT_EXITS``          ``off``: never exit early
``EDGESPLIT_DEADLINE_MS``    per-request deadline (1000)
``EDGESPLIT_ADAPT``          ``adapt``: the first guess of the link, ``BANDWIDTH/RTT`` (``18.9mbit/20``)
``EDGESPLIT_SLOWDOWN``       ``adapt``: emulate a device this many times slower than the host (1)
``EDGESPLIT_PROFILE``        netsim: ``3g``, ``4g``, ``wifi`` or ``BANDWIDTH/RTT[/JITTER]`` (``wifi``)
``EDGESPLIT_UPSTREAM``       netsim: the cloud service, ``HOST:PORT`` (``cloud:8001``)
``EDGESPLIT_CLOUD_REPLICAS``  netsim: how many addresses the cloud's name must have; one proxy each (1)
===========================  ========================================================================================
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from urllib.parse import urlsplit

NETSIM_PORT = 9001  # the first proxy's port; replica i listens on NETSIM_PORT + i


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def _api_get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _api_post(url: str, body: dict[str, object]) -> object:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _addresses(host: str) -> list[str]:
    """The IPv4 addresses ``host`` resolves to, sorted."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos}, key=socket.inet_aton)


def _wait_addresses(host: str, count: int, timeout_s: float = 120.0) -> list[str]:
    """Wait until ``host`` has ``count`` addresses (replicas register in Docker's DNS as they start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = _addresses(host)
        if len(found) >= count or time.monotonic() > deadline:
            if len(found) < count:
                raise SystemExit(f"launch: {host} has {len(found)} addresses after {timeout_s:.0f} s, want {count}")
            return found
        time.sleep(0.5)


def _netsim_cloud() -> str:
    """The edge's ``--cloud``: netsim's proxies, one per replica (IP literals for a list: gRPC's round robin)."""
    api = _env("EDGESPLIT_NETSIM_API", "http://netsim:8474")
    host = urlsplit(api).hostname or "netsim"
    proxies = _api_get(f"{api}/proxies")
    assert isinstance(proxies, dict)
    ports = sorted(int(str(p["listen"]).rsplit(":", 1)[1]) for p in proxies.values())
    if len(ports) == 1:
        return f"{host}:{ports[0]}"
    ip = _addresses(host)[0]
    return ",".join(f"{ip}:{port}" for port in ports)


def _edge_common() -> list[str]:
    args = ["--bundle", _env("EDGESPLIT_BUNDLE", "/bundle"), "--cloud", _env("EDGESPLIT_CLOUD") or _netsim_cloud()]
    args += ["--deadline-ms", _env("EDGESPLIT_DEADLINE_MS", "1000")]
    if _env("EDGESPLIT_CLOUD_ENGINE"):
        args += ["--cloud-engine", _env("EDGESPLIT_CLOUD_ENGINE")]
    if _env("EDGESPLIT_TRITON_PREFIX"):
        args += ["--triton-prefix", _env("EDGESPLIT_TRITON_PREFIX")]
    for spec in filter(None, (s.strip() for s in _env("EDGESPLIT_THRESHOLDS").split(","))):
        args += ["--threshold", spec]
    if _env("EDGESPLIT_EXITS").lower() in ("off", "0", "no", "false"):
        args.append("--no-exits")
    return args


def edge_argv() -> list[str]:
    """``edgesplit edge`` serving KServe v2 on :8000 and metrics on :9100; with ``EDGESPLIT_ADAPT``, adaptive
    (each reply names the plan in force)."""
    args = ["edgesplit", "edge", *_edge_common(), "--listen", "0.0.0.0:8000", "--metrics", "0.0.0.0:9100"]
    if _env("EDGESPLIT_SPLIT"):
        args += ["--split", _env("EDGESPLIT_SPLIT")]
    if _env("EDGESPLIT_CODEC"):
        args += ["--codec", _env("EDGESPLIT_CODEC")]
    if _env("EDGESPLIT_ADAPT"):
        args += ["--adapt", _env("EDGESPLIT_ADAPT"), "--emulate-slowdown", _env("EDGESPLIT_SLOWDOWN", "1")]
    return args


def adapt_argv() -> list[str]:
    """``edgesplit edge --adapt`` over the test set: re-plans as its requests show the link; prints the plan."""
    data = _env("EDGESPLIT_DATA", "/data")
    return [
        "edgesplit", "edge", *_edge_common(), "--adapt", _env("EDGESPLIT_ADAPT", "18.9mbit/20"),
        "--emulate-slowdown", _env("EDGESPLIT_SLOWDOWN", "1"),
        "--input", f"{data}/x_test.npy", "--labels", f"{data}/y_test.npy",
    ]  # fmt: skip


def netsim_argv() -> list[str]:
    """``edgesplit netsim`` with the API on :8474 and one proxy per cloud replica on :9001, :9002, ..."""
    host, _, port = _env("EDGESPLIT_UPSTREAM", "cloud:8001").rpartition(":")
    replicas = int(_env("EDGESPLIT_CLOUD_REPLICAS", "1"))
    upstreams = [host] if replicas == 1 else _wait_addresses(host, replicas)
    args = ["edgesplit", "netsim", "--api", "0.0.0.0:8474", "--profile", _env("EDGESPLIT_PROFILE", "wifi")]
    for i, upstream in enumerate(upstreams):
        name = "cloud" if replicas == 1 else f"cloud{i + 1}"
        args += ["--proxy", f"{name}=0.0.0.0:{NETSIM_PORT + i}={upstream}:{port}"]
    return args


def set_profile(profile: str, api: str) -> list[str]:
    """Replace every proxy's ``profile_*`` toxics' attributes with ``profile``'s, through the HTTP API."""
    from netsim.profiles import parse_profile, profile_toxics

    toxics = profile_toxics(parse_profile(profile))
    proxies = _api_get(f"{api}/proxies")
    assert isinstance(proxies, dict)
    changed = []
    for name, proxy in proxies.items():
        present = {t["name"] for t in proxy["toxics"]}
        for toxic in toxics:
            if toxic.name in present:
                _api_post(f"{api}/proxies/{name}/toxics/{toxic.name}", {"attributes": dict(toxic.attributes)})
            else:
                _api_post(f"{api}/proxies/{name}/toxics", toxic.to_json())
        changed.append(name)
    return changed


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    builders = {"edge": edge_argv, "adapt": adapt_argv, "netsim": netsim_argv}
    if command in builders:
        args = builders[command]() + argv[1:]
        print("launch: " + " ".join(args), file=sys.stderr, flush=True)
        os.execvp(args[0], args)
    if command == "set-profile" and len(argv) == 2:
        api = _env("EDGESPLIT_NETSIM_API", "http://127.0.0.1:8474")
        print(f"netsim profile {argv[1]} on proxies {', '.join(set_profile(argv[1], api))}")
        return 0
    print(__doc__.split("Environment")[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
