"""``edgesplit plan --network NAME``: a named network fills the bandwidth, RTT and radio; a bad mix is refused."""

from __future__ import annotations

import argparse

import pytest

from edge.plan_cli import add_arguments, resolve_network


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--bundle", "b", *argv])


def test_a_named_network_sets_bandwidth_rtt_and_link() -> None:
    args = _args("--network", "4g")
    resolve_network(args)
    assert (args.bandwidth, args.rtt, args.link) == (5.85e6, 60, "4g")
    explicit = _args("--network", "3g", "--link", "wifi")
    resolve_network(explicit)
    assert (explicit.bandwidth, explicit.rtt, explicit.link) == (1.1e6, 150, "wifi")
    plain = _args("--bandwidth", "10mbit", "--rtt", "5")
    resolve_network(plain)
    assert (plain.bandwidth, plain.rtt, plain.link) == (1e7, 5.0, "wifi")


def test_the_network_is_given_once() -> None:
    with pytest.raises(ValueError, match="not both"):
        resolve_network(_args("--network", "4g", "--rtt", "5"))
    with pytest.raises(ValueError, match="give the network: --network"):
        resolve_network(_args("--bandwidth", "10mbit"))
    with pytest.raises(SystemExit):
        _args("--network", "5g")
