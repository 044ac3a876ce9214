"""Standard gRPC health checking (``grpc.health.v1.Health``): Check, Watch and List."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from protos import health_pb2, health_pb2_grpc

__all__ = ["HealthServicer"]

_Status = health_pb2.HealthCheckResponse


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Serving status per service name (``""`` is the whole server); Watch streams every change."""

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus] = {}
        self._changed = threading.Condition()
        self._closed = False

    def set(self, service: str, serving: bool) -> None:
        """Mark ``service`` SERVING or NOT_SERVING and wake its watchers."""
        with self._changed:
            self._status[service] = _Status.SERVING if serving else _Status.NOT_SERVING
            self._changed.notify_all()

    def close(self) -> None:
        """Everything NOT_SERVING; watchers end (call when shutting down)."""
        with self._changed:
            self._status = dict.fromkeys(self._status, _Status.NOT_SERVING)
            self._closed = True
            self._changed.notify_all()

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> _Status:
        with self._changed:
            status = self._status.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _Status(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Iterator[_Status]:
        last = None
        while context.is_active():
            with self._changed:
                status = self._status.get(request.service, _Status.SERVICE_UNKNOWN)
                if status == last:
                    if self._closed:
                        return
                    self._changed.wait(timeout=1.0)
                    continue
            last = status
            yield _Status(status=status)

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        with self._changed:
            statuses = {name: _Status(status=s) for name, s in self._status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)
