"""Build, start and stop the cloud gRPC server.

Example:
    >>> server = CloudServer(CloudConfig(bundles=("bundle/",), port=0))    # doctest: +SKIP
    >>> port = server.start()                                               # doctest: +SKIP
    >>> server.stop(grace=5.0)                                              # doctest: +SKIP
"""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc

from cloud.errors import ErrorInterceptor
from cloud.health import HealthServicer
from cloud.reflection import enable_reflection
from cloud.repository import ModelRepository
from cloud.servicer import InferenceServicer
from protos import health_pb2_grpc, inference_pb2_grpc

__all__ = ["CloudConfig", "CloudServer"]

SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class CloudConfig:
    """How to serve: which bundles, where, with how many workers and what message-size limits."""

    bundles: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8001
    workers: int = 8
    threads: int = 0
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ValueError("at least one bundle directory is needed (--bundle DIR)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks a free one), got {self.port}")
        if self.workers < 1 or self.threads < 0:
            raise ValueError(f"workers must be >= 1 and threads >= 0, got {self.workers}, {self.threads}")
        if not 1024 <= self.max_message_bytes <= 2**31 - 1:
            raise ValueError(f"max_message_bytes must be in 1024..2**31-1, got {self.max_message_bytes}")


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
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="edgesplit-cloud"),
            interceptors=[ErrorInterceptor()],
            options=limits,
        )
        max_elements = config.max_message_bytes // 2
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.repository, max_elements), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection(self._server)
        self.port = 0

    def start(self) -> int:
        """Bind and start; returns the bound port (useful with ``port=0``)."""
        self.port = self._server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise OSError(f"could not bind {self.config.host}:{self.config.port}")
        self._server.start()
        for service in ("", SERVICE):
            self.health.set(service, True)
        return self.port

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout``)."""
        return self._server.wait_for_termination(timeout)

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting new RPCs, let those in flight finish within ``grace`` seconds."""
        self.health.close()
        self._server.stop(grace).wait()
