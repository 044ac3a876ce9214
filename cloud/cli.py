"""``edgesplit cloud``: serve bundles' tails over KServe v2 gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType

from cloud.server import CloudConfig, CloudServer
from protos.credentials import check_token, read_tokens

__all__ = ["TOKENS_ENV", "add_arguments", "auth_tokens", "run"]

TOKENS_ENV = "EDGESPLIT_AUTH_TOKENS"
"""Environment variable: accepted bearer tokens, comma-separated (besides those in ``--auth-token-file``)."""


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
    security = parser.add_argument_group("security (default: plaintext, no authentication)")
    security.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    security.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, unencrypted)")
    security.add_argument(
        "--tls-client-ca", metavar="FILE", help="mutual TLS: require client certificates signed by this CA (PEM)"
    )
    security.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help=f"require 'authorization: Bearer <token>' on inference calls; one accepted token a line, '#' comments"
        f" (tokens in ${TOKENS_ENV}, comma-separated, are accepted too); health checks stay open",
    )


def auth_tokens(token_file: str | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The accepted tokens: those in ``token_file`` and in ``environ[TOKENS_ENV]`` (comma-separated), deduplicated.

    Raises:
        ValueError: the file cannot be read or a token is invalid (never quoting the token).
    """
    tokens = list(read_tokens(token_file)) if token_file else []
    for i, token in enumerate(t.strip() for t in environ.get(TOKENS_ENV, "").split(",")):
        if token:
            tokens.append(check_token(token, f"${TOKENS_ENV}, entry {i + 1}"))
    return tuple(dict.fromkeys(tokens))


def run(args: argparse.Namespace) -> int:
    """Serve until a signal; prints one ``serving ... on HOST:PORT`` line once ready."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = CloudConfig(
        tuple(args.bundle),
        args.host,
        args.port,
        args.workers,
        args.threads,
        args.max_message_mb * 1024 * 1024,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=auth_tokens(args.auth_token_file, os.environ),
    )
    server = CloudServer(config)
    port = server.start()
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    security = ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls else "plaintext"
    security += ", bearer tokens" if config.auth_tokens else ""
    names = ", ".join(server.repository.names())
    print(f"edgesplit cloud: serving {names} on {config.host}:{port} ({security})", flush=True)
    stop.wait()
    server.stop(grace=5.0)
    print("edgesplit cloud: stopped", file=sys.stderr, flush=True)
    return 0
