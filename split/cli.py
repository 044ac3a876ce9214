"""``edgesplit``: one entry point; each subcommand imports only its own module.

``edgesplit cloud`` and ``edgesplit edge`` import nothing from torch or ``split/``'s training code, so they run in
torch-free containers. Each subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("split.demo", "train, export, serve and run the hybrid on the digits; print the comparison"),
    "export": (
        "split.export_cli",
        "train (cached), calibrate and export a bundle for a family or your own module (or a Triton repository)",
    ),
    "profile": ("split.profile", "measure a bundle's latencies, bytes per codec and exit rates into its manifest"),
    "plan": ("edge.plan_cli", "expected latency of every split/codec/exits choice on a network; the best one"),
    "cloud": ("cloud.cli", "serve bundles' tails over KServe v2 gRPC"),
    "edge": ("edge.cli", "run the edge head on inputs, offloading to a cloud"),
    "netsim": ("netsim.cli", "a TCP proxy with Toxiproxy's toxics and HTTP API: latency, bandwidth, outages"),
    "bench": ("benchmarks.cli", "benchmarks, one subcommand each: accuracy, network, faults, cloud, edge, photos"),
}


def _usage() -> str:
    lines = ["usage: edgesplit COMMAND [options]   (edgesplit COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"edgesplit: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"edgesplit {command}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args))
    except (ValueError, OSError) as exc:
        print(f"edgesplit {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
