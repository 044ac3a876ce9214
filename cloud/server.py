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

import asyncio
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from cloud.auth import TokenAuthInterceptor
from cloud.batcher import BatchConfig
from cloud.errors import ErrorInterceptor
from cloud.health import HealthServicer
from cloud.metrics import CloudMetrics
from cloud.model import TailModel
from cloud.reflection import enable_reflection
from cloud.repository import ModelRepository
from cloud.security import check_tls_files, server_credentials
from cloud.servicer import InferenceServicer
from protos import health_pb2_grpc, inference_pb2_grpc
from protos.bundle import Bundle
from protos.credentials import check_token
from protos.exposition import MetricsServer

__all__ = ["CloudConfig", "CloudServer"]

SERVICE = "inference.GRPCInferenceService"

log = logging.getLogger("edgesplit.cloud")


@dataclass(frozen=True)
class CloudConfig:
    """How to serve.

    Args:
        bundles: bundle directories, each served as version 1 of its model.
        repository: a model repository ``ROOT/<model>/<version>/`` scanned at start, every ``poll_s`` seconds
            (0: only at start and on :meth:`CloudServer.reload`).
        host, port: where to listen (port 0 picks a free one).
        workers: threads that run ONNX Runtime (batches; with batching off, single requests, that many at once);
            requests themselves wait on the server's event loop and hold no thread.
        max_concurrent_rpcs: RPCs admitted at once; past it gRPC answers RESOURCE_EXHAUSTED (bounds memory).
        threads: ONNX Runtime intra-op threads per session (0: all cores).
        max_message_bytes: gRPC message-size limit; tensors are limited to half of it in elements.
        batching: dynamic batching (Triton's ``max_batch_size`` and ``max_queue_delay_us``) and queue bounds.
        metrics: ``HOST:PORT`` for Prometheus metrics at ``/metrics`` (None: off).
        tls_cert, tls_key: PEM files: the port is TLS.
        tls_client_ca: the CA that signs client certificates: mutual TLS.
        auth_tokens: bearer tokens, any of which is accepted (never shown in the repr).
    """

    bundles: tuple[str, ...] = ()
    repository: str | None = None
    poll_s: float = 0.0
    host: str = "127.0.0.1"
    port: int = 8001
    workers: int = 4
    max_concurrent_rpcs: int = 256
    threads: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    batching: BatchConfig = field(default_factory=BatchConfig)
    metrics: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.bundles and self.repository is None:
            raise ValueError("nothing to serve: give bundle directories (--bundle DIR) or a repository (--repository)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks a free one), got {self.port}")
        if self.workers < 1 or self.threads < 0 or self.max_concurrent_rpcs < 1:
            raise ValueError(
                f"workers and max_concurrent_rpcs must be >= 1 and threads >= 0,"
                f" got {self.workers}, {self.max_concurrent_rpcs}, {self.threads}"
            )
        if not 1024 <= self.max_message_bytes <= 2**31 - 1:
            raise ValueError(f"max_message_bytes must be in 1024..2**31-1, got {self.max_message_bytes}")
        if self.poll_s < 0:
            raise ValueError(f"poll_s must be >= 0 (0: no polling), got {self.poll_s}")
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
    """The inference and health services on one gRPC server, with metrics and a repository poller."""

    def __init__(self, config: CloudConfig, repository: ModelRepository | None = None) -> None:
        self.config = config
        self.metrics = CloudMetrics()
        self._executor = futures.ThreadPoolExecutor(config.workers, thread_name_prefix="edgesplit-ort")
        if repository is None:
            repository = ModelRepository(self._build_model, config.repository)
            repository.add_bundles(config.bundles)
            repository.scan()
        self.repository = repository
        self.health = HealthServicer()
        if config.auth_tokens and not config.tls:
            log.warning("bearer tokens on a plaintext port: anyone on the path can read them; use --tls-cert")
        self._metrics_server = (
            MetricsServer(lambda: self.metrics.render(self.repository.models()), config.metrics)
            if config.metrics
            else None
        )
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._grace: float | None = None
        self.port = 0
        self.metrics_port = 0

    def start(self) -> int:
        """Bind and start (the asyncio server runs in its own thread); returns the bound port."""
        self._thread = threading.Thread(target=self._main, name="edgesplit-cloud", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        if self._metrics_server is not None:
            self.metrics_port = self._metrics_server.start()
        if self.config.repository is not None and self.config.poll_s > 0:
            self._poller = threading.Thread(target=self._poll, name="edgesplit-repository", daemon=True)
            self._poller.start()
        for service in ("", SERVICE):
            self.health.set(service, True)
        return self.port

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self.health.bind(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    def _grpc_server(self) -> grpc.aio.Server:
        config = self.config
        interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor(self._observe)]
        if config.auth_tokens:
            interceptors.append(TokenAuthInterceptor(config.auth_tokens))  # inside the error interceptor: counted
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        servicer = InferenceServicer(self.repository, config.max_message_bytes // 2)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection(server)
        return server

    async def _serve(self) -> None:
        try:
            server = self._grpc_server()
            self.port = self._bind(server, f"{self.config.host}:{self.config.port}")
            if self.port == 0:
                raise OSError(f"could not bind {self.config.host}:{self.config.port}")
            await server.start()
        except BaseException as exc:  # reported to start()'s caller
            self._start_error = exc
            self._started.set()
            return
        self._stopping = asyncio.Event()
        self._started.set()
        await self._stopping.wait()
        await server.stop(self._grace)

    def reload(self) -> list[str]:
        """Scan the repository now: load new versions, retire removed ones; what changed."""
        with self._reload_lock:
            changes = self.repository.scan()
        for change in changes:
            log.info("repository: %s", change)
        return changes

    def _bind(self, server: grpc.aio.Server, address: str) -> int:
        c = self.config
        if c.tls_cert is None or c.tls_key is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout``); True when it has stopped."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def stop(self, grace: float | None = 5.0) -> None:
        """Drain: health says NOT_SERVING, new RPCs are refused, those in flight (queued ones included) finish
        within ``grace`` seconds; then the models are retired and metrics stop."""
        if self._stop.is_set():
            return  # stopped already
        started = time.monotonic()
        self.health.close()
        self._stop.set()
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._grace = grace
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join()
        self.repository.close()
        self._executor.shutdown(wait=False)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        log.info("stopped", extra={"fields": {"drain_s": round(time.monotonic() - started, 3)}})

    def _build_model(self, bundle: Bundle, version: str) -> TailModel:
        c = self.config
        return TailModel(
            bundle, version, c.threads, c.batching, on_batch=self.metrics.observe_batch, executor=self._executor
        )

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_s):
            try:
                self.reload()
            except OSError as exc:  # the repository directory went away for a moment: try again next time
                log.warning("repository scan failed: %s", exc)

    def _observe(self, method: str, request: Any, response: Any, code: grpc.StatusCode, seconds: float) -> None:
        name = str(getattr(request, "model_name", None) or getattr(request, "name", ""))
        model = name if name in self.repository else ""
        asked = getattr(request, "model_version", None) or getattr(request, "version", "")
        version = str(getattr(response, "model_version", None) or "")
        if not version:  # only versions that exist become labels: bad requests cannot grow the label set
            version = str(asked) if model and asked in self.repository.versions(model) else ""
        self.metrics.observe_request(method, model, version, code.name, seconds)
        if code != grpc.StatusCode.OK:
            fields = {"method": method, "model": name[:128], "code": code.name, "ms": round(seconds * 1e3, 3)}
            log.info("rpc failed", extra={"fields": fields})
