"""``edgesplit netsim``: proxies with toxics and Toxiproxy's HTTP API, until SIGTERM or SIGINT.

Example::

    edgesplit netsim --proxy cloud=127.0.0.1:9001=127.0.0.1:8001 --profile 4g
    # prints "netsim api on 127.0.0.1:8474" once ready; then, e.g.:
    curl -X POST -d '{"enabled": false}' http://127.0.0.1:8474/proxies/cloud
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from netsim.api import ApiServer
from netsim.collection import ProxyCollection
from netsim.errors import BadRequestError
from netsim.profiles import Profile, apply_profile, parse_profile
from netsim.proxy import ProxyConfig, format_address, parse_address

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument(
        "--api",
        default="127.0.0.1:8474",
        metavar="HOST:PORT",
        help="HTTP API address; port 0 picks a free one (default: %(default)s, as Toxiproxy)",
    )
    parser.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NAME=LISTEN=UPSTREAM",
        help="a proxy, e.g. cloud=127.0.0.1:9001=127.0.0.1:8001 (repeat for several)",
    )
    parser.add_argument(
        "--profile", metavar="NAME", help="network profile for every proxy: 3g, 4g, wifi or e.g. 10mbit/40ms[/5ms]"
    )


def parse_proxy(text: str) -> ProxyConfig:
    """``NAME=LISTEN=UPSTREAM`` -> :class:`ProxyConfig`."""
    parts = text.split("=")
    if len(parts) != 3:
        raise BadRequestError(
            f"--proxy {text!r} is not NAME=LISTEN=UPSTREAM (e.g. cloud=127.0.0.1:9001=127.0.0.1:8001)"
        )
    return ProxyConfig(name=parts[0], listen=parts[1], upstream=parts[2])


def run(args: argparse.Namespace) -> int:
    """Serve until a signal; prints one ``netsim api on HOST:PORT`` line once ready."""
    host, port = parse_address(args.api, "--api")
    proxies = [parse_proxy(text) for text in args.proxy]
    profile = parse_profile(args.profile) if args.profile else None
    asyncio.run(_serve(host, port, proxies, profile))
    return 0


async def _serve(host: str, port: int, configs: list[ProxyConfig], profile: Profile | None) -> None:
    proxies = ProxyCollection()
    api = ApiServer(proxies, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        for config in configs:
            proxy = await proxies.create(config)
            if profile is not None:
                apply_profile(proxy, profile)
            print(f"netsim: proxy {proxy.name} on {proxy.listen} -> {config.upstream}", file=sys.stderr, flush=True)
        await api.start()
        print(f"netsim api on {format_address(host, api.port)}", flush=True)
        await stop.wait()
    finally:
        await api.close()
        await proxies.close()
        print("netsim: stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m netsim``: the same as ``edgesplit netsim``."""
    parser = argparse.ArgumentParser(prog="netsim", description="TCP proxies with Toxiproxy's toxics and HTTP API")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"netsim: error: {exc}", file=sys.stderr)
        return 1
