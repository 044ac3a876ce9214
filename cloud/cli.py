"""``edgesplit cloud``: serve bundles' tails over KServe v2 gRPC until SIGTERM or SIGINT (SIGHUP: rescan the
model repository)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType

from cloud import logs
from cloud.batcher import BatchConfig
from cloud.server import CloudConfig, CloudServer
from protos.credentials import check_token, read_tokens

__all__ = ["TOKENS_ENV", "add_arguments", "auth_tokens", "run"]

TOKENS_ENV = "EDGESPLIT_AUTH_TOKENS"
"""Environment variable: accepted bearer tokens, comma-separated (besides those in ``--auth-token-file``)."""

log = logging.getLogger("edgesplit.cloud")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    models = parser.add_argument_group("models (at least one of --bundle and --repository)")
    models.add_argument(
        "--bundle", action="append", default=[], metavar="DIR", help="a bundle, served as version 1 (repeatable)"
    )
    models.add_argument("--repository", metavar="ROOT", help="a model repository: ROOT/<model>/<version>/ bundles")
    models.add_argument(
        "--poll-s", type=float, default=0.0, help="rescan the repository every N seconds (0: at start and on SIGHUP)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, help="threads running ONNX Runtime (default: %(default)s)")
    parser.add_argument(
        "--max-concurrent-rpcs", type=int, default=256, help="RPCs admitted at once (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads, 0 = all cores")
    parser.add_argument("--max-message-mb", type=int, default=64, help="gRPC message-size limit (default: %(default)s)")
    batching = parser.add_argument_group("dynamic batching (Triton's knobs)")
    batching.add_argument("--no-batching", action="store_true", help="run each request by itself")
    batching.add_argument("--max-batch-size", type=int, default=32, help="samples per run (default: %(default)s)")
    batching.add_argument(
        "--max-queue-delay-us", type=int, default=0, help="the oldest request waits this long for others (default: 0)"
    )
    batching.add_argument(
        "--max-queue-size", type=int, default=1024, help="samples queued per tail before RESOURCE_EXHAUSTED"
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics")
    ops.add_argument("--log-format", choices=logs.FORMATS, default="text", help="text or JSON lines")
    ops.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ops.add_argument("--drain-s", type=float, default=10.0, help="on SIGTERM, finish RPCs in flight within N seconds")

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


def _config(args: argparse.Namespace) -> CloudConfig:
    batching = BatchConfig(
        enabled=not args.no_batching,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
    )
    return CloudConfig(
        bundles=tuple(args.bundle),
        repository=args.repository,
        poll_s=args.poll_s,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        threads=args.threads,
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        batching=batching,
        metrics=args.metrics,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=auth_tokens(args.auth_token_file, os.environ),
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
    logs.configure(args.log_format, args.log_level)
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"edgesplit cloud: {exc}", file=sys.stderr)
        return 2
    server = CloudServer(config)
    port = server.start()
    stop = threading.Event()

    def _on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def _on_hup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.reload, name="edgesplit-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGHUP, _on_hup)
    if server.metrics_port:
        host = (config.metrics or "").rpartition(":")[0]
        print(f"edgesplit cloud: metrics on http://{host}:{server.metrics_port}/metrics", flush=True)
    security = ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls else "plaintext"
    security += ", bearer tokens" if config.auth_tokens else ""
    served = ", ".join(f"{n} {server.repository.versions(n)}" for n in server.repository.names()) or "no models yet"
    print(f"edgesplit cloud: serving {served} on {config.host}:{port} ({security})", flush=True)
    stop.wait()
    log.info("draining", extra={"fields": {"grace_s": args.drain_s}})
    server.stop(grace=args.drain_s)
    print("edgesplit cloud: stopped", file=sys.stderr, flush=True)
    return 0
