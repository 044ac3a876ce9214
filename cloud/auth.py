"""Bearer-token authentication for the cloud: a server interceptor that checks every call's metadata.

With tokens configured, every method needs the metadata ``authorization: Bearer <token>`` holding one of them
(several tokens are accepted at once, so they can be rotated); otherwise the call ends ``UNAUTHENTICATED`` with a
message that says what to send and never repeats what was sent. Health checking (``grpc.health.v1.Health``) and
server reflection stay open: load balancers and orchestrators probe without secrets.

The check is one pass over the call's few metadata entries and a constant-time comparison per configured token
(:func:`hmac.compare_digest`); a refused call's request is never deserialized.

Example:
    >>> interceptor = TokenAuthInterceptor(("first-token-0123456789", "second-token-0123456789"))
    >>> server = grpc.server(executor, interceptors=[interceptor, ErrorInterceptor()])   # doctest: +SKIP
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

from protos.credentials import AUTHORIZATION, SCHEME, check_token

__all__ = ["OPEN_PREFIXES", "TokenAuthInterceptor"]

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Methods (by full-name prefix) that need no token: health probes and server reflection."""

_MESSAGE = f"missing or invalid credentials: send the metadata '{AUTHORIZATION}: {SCHEME} <token>'"

_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid bearer token (``UNAUTHENTICATED``), except to methods under ``open_prefixes``.

    Args:
        tokens: The accepted tokens (at least one; each checked with :func:`protos.credentials.check_token`).
        open_prefixes: Full method-name prefixes that need no token.

    Raises:
        ValueError: no token, or a token that could not travel as metadata or is too short.
    """

    def __init__(self, tokens: Iterable[str], open_prefixes: Sequence[str] = OPEN_PREFIXES) -> None:
        self._tokens = tuple(check_token(t, f"token {i + 1}").encode("ascii") for i, t in enumerate(tokens))
        if not self._tokens:
            raise ValueError("TokenAuthInterceptor needs at least one token")
        self._open = tuple(open_prefixes)
        # built once: the handler a refused call gets, per streaming kind (its request is never deserialized)
        self._refusals = {kind: factory(_refuse) for kind, factory in _FACTORIES.items()}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(self._open) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: UNIMPLEMENTED, as without tokens
        return self._refusals[handler.request_streaming, handler.response_streaming]

    def _authorized(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        value = next((v for k, v in metadata or () if k == AUTHORIZATION), None)
        if not isinstance(value, str):
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != SCHEME.lower():
            return False
        presented = token.strip().encode("utf-8", "replace")
        matched = False
        for accepted in self._tokens:  # no early exit: the time taken does not say which token matched
            matched |= hmac.compare_digest(presented, accepted)
        return matched
