"""``edgesplit cloud``: serve bundles' tails over KServe v2 gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from cloud.server import CloudConfig, CloudServer

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument(
        "--bundle",
        action="append",
        required=True,
        metavar="DIR",
        help="bundle directory written by 'edgesplit export' (repeat to serve several)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=8, help="gRPC worker threads (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, 0 = all cores")
    parser.add_argument("--max-message-mb", type=int, default=64, help="gRPC message-size limit (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Serve until a signal; prints one ``serving ... on HOST:PORT`` line once ready."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = CloudConfig(
        tuple(args.bundle), args.host, args.port, args.workers, args.threads, args.max_message_mb * 1024 * 1024
    )
    server = CloudServer(config)
    port = server.start()
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"edgesplit cloud: serving {', '.join(server.repository.names())} on {config.host}:{port}", flush=True)
    stop.wait()
    server.stop(grace=5.0)
    print("edgesplit cloud: stopped", file=sys.stderr, flush=True)
    return 0
