"""Build, start and stop the cloud gRPC server.

Without TLS files the port is plaintext; with ``tls_cert`` and ``tls_key`` it is TLS, and with ``tls_client_ca``
too, mutual TLS (clients must present a certificate that CA signed). With ``auth_tokens``, every inference call
needs one of them as a bearer token (:mod:`cloud.auth`); health checks stay open.

Example:
    >>> server = CloudServer(CloudConfig(bundles=("bundle/",), port=0))    # doctest: +SKIP
    >>> port = server.start()                                               # doctest: +SKIP
    >>> server.stop(grace=5.0)                                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from cloud.auth import TokenAuthInterceptor
from cloud.errors import ErrorInterceptor
from cloud.health import HealthServicer
from cloud.repository import ModelRepository
from cloud.security import check_tls_files, server_credentials
from cloud.servicer import InferenceServicer
from protos import health_pb2_grpc, inference_pb2_grpc
from protos.credentials import check_token

__all__ = ["CloudConfig", "CloudServer"]

SERVICE = "inference.GRPCInferenceService"

log = logging.getLogger("edgesplit.cloud")


@dataclass(frozen=True)
class CloudConfig:
    """How to serve: which bundles, where, with how many workers and what message-size limits; optionally TLS
    (``tls_cert`` and ``tls_key``: PEM files), mutual TLS (``tls_client_ca``: the CA that signs client
    certificates) and bearer tokens (``auth_tokens``: any of them is accepted; never shown in the repr)."""

    bundles: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8001
    workers: int = 8
    threads: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ValueError("at least one bundle directory is needed (--bundle DIR)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks a free one), got {self.port}")
        if self.workers < 1 or self.threads < 0:
            raise ValueError(f"workers must be >= 1 and threads >= 0, got {self.workers}, {self.threads}")
        if not 1024 <= self.max_message_bytes <= 2**31 - 1:
            raise ValueError(f"max_message_bytes must be in 1024..2**31-1, got {self.max_message_bytes}")
        check_tls_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        if not isinstance(self.auth_tokens, tuple):
            raise ValueError(f"auth_tokens must be a tuple of tokens, got a {type(self.auth_tokens).__name__}")
        for i, token in enumerate(self.auth_tokens):
            check_token(token, f"auth_tokens[{i}]")

    @property
    def tls(self) -> bool:
        """Whether the port is TLS."""
        return self.tls_cert is not None


class CloudServer:
    """The inference and health services on one gRPC server."""

    def __init__(self, config: CloudConfig, repository: ModelRepository | None = None) -> None:
        self.config = config
        self.repository = repository or ModelRepository.from_bundles(config.bundles, config.threads)
        self.health = HealthServicer()
        limits = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
        ]
        interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor()]
        if config.auth_tokens:
            interceptors.insert(0, TokenAuthInterceptor(config.auth_tokens))  # auth first: refused calls stop there
            if not config.tls:
                log.warning("bearer tokens on a plaintext port: anyone on the path can read them; use --tls-cert")
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="edgesplit-cloud"),
            interceptors=interceptors,
            options=limits,
        )
        max_elements = config.max_message_bytes // 2
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.repository, max_elements), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = 0

    def start(self) -> int:
        """Bind and start; returns the bound port (useful with ``port=0``)."""
        self.port = self._bind(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise OSError(f"could not bind {self.config.host}:{self.config.port}")
        self._server.start()
        for service in ("", SERVICE):
            self.health.set(service, True)
        return self.port

    def _bind(self, address: str) -> int:
        c = self.config
        if c.tls_cert is None or c.tls_key is None:
            return self._server.add_insecure_port(address)
        return self._server.add_secure_port(address, server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout``)."""
        return self._server.wait_for_termination(timeout)

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting new RPCs, let those in flight finish within ``grace`` seconds."""
        self.health.close()
        self._server.stop(grace).wait()
