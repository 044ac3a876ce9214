"""The cloud service's errors and their gRPC status codes: the one place where the mapping lives.

Every error the service raises carries its status code as a class attribute; built-in exceptions that reach the
edge of an RPC are looked up along their MRO in :data:`STATUS_BY_TYPE`. :class:`ErrorInterceptor` (an asyncio
server interceptor) applies the mapping to every unary RPC, so servicer methods stay free of try/except.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from protos import params
from protos.bundle import BundleError
from protos.tensors import TensorFormatError

__all__ = [
    "CloudError",
    "DeadlineExceeded",
    "ErrorInterceptor",
    "FailedPrecondition",
    "InvalidArgument",
    "ModelNotFound",
    "Overloaded",
    "status_for",
]

log = logging.getLogger("edgesplit.cloud")


class CloudError(Exception):
    """Base of the cloud service's errors; ``code`` is the gRPC status returned to the caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(CloudError):
    """The request is malformed: wrong shape, dtype, byte count, parameter or split point."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(CloudError):
    """No model (or version) of that name is served."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(CloudError):
    """The request was built for another bundle (its content hash does not match)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(CloudError):
    """The tail's queue is full; ``retry_after_ms`` (sent as trailing metadata ``retry-after-ms``) says when the
    queue is expected to have drained."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(f"{message}; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(CloudError):
    """The caller's deadline passed before its request ran."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


STATUS_BY_TYPE: dict[type[BaseException], grpc.StatusCode] = {
    TensorFormatError: grpc.StatusCode.INVALID_ARGUMENT,
    BundleError: grpc.StatusCode.INVALID_ARGUMENT,
}


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for ``exc``, or None for an unexpected error (which becomes INTERNAL)."""
    code = getattr(exc, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code
    return next((STATUS_BY_TYPE[t] for t in type(exc).__mro__ if t in STATUS_BY_TYPE), None)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    code = status_for(exc)
    if code is None:
        log.exception("internal error in %s", type(exc).__name__)
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
    else:
        message = str(exc)
    retry_after = getattr(exc, "retry_after_ms", None)
    if retry_after is not None:
        context.set_trailing_metadata(((params.RETRY_AFTER_MS, str(retry_after)),))
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


def _parse(deserialize: Callable[[bytes], Any], raw: bytes, method: str) -> Any:
    try:
        return deserialize(raw)
    except DecodeError:
        raise InvalidArgument(f"the {method} request is not a valid protobuf message ({len(raw)} bytes)") from None


Observer = Callable[[str, Any, Any, grpc.StatusCode, float], None]
"""Told about every RPC: (method name, request, response or None, status code, seconds in the handler)."""


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions raised by unary handlers into status codes via :func:`status_for`; tells ``observe``
    (metrics, logs) how each RPC ended."""

    def __init__(self, observe: Observer | None = None) -> None:
        self._observe = observe

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method.rpartition("/")[2]
        observe = self._observe
        deserialize = handler.request_deserializer  # here, so that bytes that do not parse are INVALID_ARGUMENT

        async def guarded(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            request = None
            try:
                request = raw if deserialize is None else _parse(deserialize, raw, method)
                response = await inner(request, context)
            except grpc.aio.AbortError:  # the handler aborted with its own status
                if observe is not None:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    observe(method, request, None, code, time.perf_counter() - start)
                raise
            except Exception as exc:
                if observe is not None:
                    code = status_for(exc) or grpc.StatusCode.INTERNAL
                    observe(method, request, None, code, time.perf_counter() - start)
                await _abort(context, exc)
            if observe is not None:
                observe(method, request, response, grpc.StatusCode.OK, time.perf_counter() - start)
            return response

        return grpc.unary_unary_rpc_method_handler(guarded, response_serializer=handler.response_serializer)
