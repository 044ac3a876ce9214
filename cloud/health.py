"""Standard gRPC health checking (``grpc.health.v1.Health``) on the asyncio server: Check, Watch and List.

:meth:`HealthServicer.set` and :meth:`HealthServicer.close` may be called from any thread; watchers on the
server's event loop are woken through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import grpc

from protos import health_pb2, health_pb2_grpc

__all__ = ["HealthServicer"]

_Status = health_pb2.HealthCheckResponse


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Serving status per service name (``""`` is the whole server); Watch streams every change."""

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake watchers on ``loop`` (the server's, once it runs)."""
        self._loop = loop

    def set(self, service: str, serving: bool) -> None:
        """Mark ``service`` SERVING or NOT_SERVING and wake its watchers."""
        with self._lock:
            self._status[service] = _Status.SERVING if serving else _Status.NOT_SERVING
        self._wake()

    def close(self) -> None:
        """Everything NOT_SERVING; watchers end (call when shutting down)."""
        with self._lock:
            self._status = dict.fromkeys(self._status, _Status.NOT_SERVING)
            self._closed = True
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is watching any more
                loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _get(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus | None:
        with self._lock:
            return self._status.get(service)

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> _Status:
        status = self._get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _Status(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[_Status]:
        last = None
        while True:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed  # taken before reading, so a change made after the read still wakes us
            status = self._get(request.service)
            status = _Status.SERVICE_UNKNOWN if status is None else status
            if status != last:
                last = status
                yield _Status(status=status)
                continue
            if self._closed:
                return
            await changed.wait()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        with self._lock:
            statuses = {name: _Status(status=s) for name, s in self._status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)
