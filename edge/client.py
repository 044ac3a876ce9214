"""The edge's gRPC client for the cloud: one channel, one stub, requests built without extra copies.

The channel may span several cloud replicas (round robin) and use TLS or mutual TLS (:mod:`edge.channel`); a bearer
token, when given, rides on every call as metadata built once.

:meth:`CloudClient.infer` blocks; :meth:`CloudClient.infer_async` returns a :class:`PendingReply` at once (the
gRPC future API), so the edge can go on computing while the tensor is in flight, poll it, or cancel it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import grpc
import numpy as np

from edge.channel import ClientTLS, CloudTarget
from edge.errors import CloudRejected, CloudUnavailable, EdgeError
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.bundle import TensorSpec
from protos.codecs import Codec, encode
from protos.credentials import bearer_metadata
from protos.tensors import add_input, get_param, response_outputs, set_param

__all__ = ["CloudClient", "CloudReply", "PendingReply"]


class CloudReply(NamedTuple):
    """The cloud's answer: logits, tensor bytes sent, the round trip as the edge saw it and the server's own time."""

    logits: np.ndarray
    bytes_sent: int
    rpc_ms: float
    server_ms: float


FP32 = Codec()

# Status codes after which the edge may fall back and try again later, with the reason a degraded answer gives;
# any other code (UNAUTHENTICATED and PERMISSION_DENIED included) is a rejection.
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded",
    grpc.StatusCode.ABORTED: "unavailable",
    grpc.StatusCode.CANCELLED: "unavailable",
}


def _retry_after_s(err: grpc.RpcError) -> float | None:
    trailing = getattr(err, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == params.RETRY_AFTER_MS:
            try:
                return max(0.0, float(value)) / 1e3
            except (TypeError, ValueError):
                return None  # a hint that is not a number is no hint
    return None


def _translate(err: grpc.RpcError) -> EdgeError:
    code, details = err.code(), err.details()
    message = f"cloud answered {code.name}: {details}"
    reason = _TRANSIENT.get(code)
    if reason is None:
        return CloudRejected(message)
    return CloudUnavailable(message, reason, _retry_after_s(err) if reason == "overloaded" else None)


class PendingReply:
    """A request in flight (from :meth:`CloudClient.infer_async`): poll :meth:`done`, wait on :meth:`result`, or
    :meth:`cancel` it. ``bytes_sent`` is known at once; the round trip is timed until the reply arrived, not
    until it was collected."""

    def __init__(self, future: Any, bytes_sent: int, start: float) -> None:
        self._future = future
        self.bytes_sent = bytes_sent
        self._start = start
        self._end: float | None = None
        self._arrived = threading.Event()
        future.add_done_callback(self._stamp)

    def _stamp(self, _: Any) -> None:
        self._end = time.perf_counter()
        self._arrived.set()

    def done(self) -> bool:
        """Whether the reply (or an error) has arrived; never blocks."""
        return self._arrived.is_set()

    def cancel(self) -> None:
        """Stop waiting for the reply (the call is cancelled; :meth:`result` raises ``CloudUnavailable``)."""
        self._future.cancel()

    def result(self) -> CloudReply:
        """Wait for the reply (the call's own timeout bounds the wait); ``CloudUnavailable`` or
        ``CloudRejected`` when the cloud did not answer."""
        try:
            response = self._future.result()
        except grpc.FutureCancelledError:
            raise CloudUnavailable("the request was cancelled on the edge") from None
        except grpc.RpcError as err:
            raise _translate(err) from None
        self._arrived.wait()
        assert self._end is not None
        outputs = response_outputs(response)
        if len(outputs) != 1:
            raise CloudRejected(f"expected one output from the cloud, got {list(outputs)}")
        server_ms = get_param(response.parameters, params.SERVER_MS, 0.0)
        return CloudReply(
            next(iter(outputs.values())),
            self.bytes_sent,
            (self._end - self._start) * 1e3,
            float(server_ms) if isinstance(server_ms, int | float) else 0.0,
        )


class CloudClient:
    """Sends split tensors to ``target`` for ``model`` and returns the logits.

    Args:
        target: ``host:port`` (any gRPC target), or several ``IP:PORT`` comma-separated: round robin over them.
        model: The model name (the bundle's).
        bundle_hash: The bundle's content hash, which the cloud checks.
        timeout_s: The default call timeout.
        max_message_bytes: The gRPC message-size limits.
        max_reconnect_backoff_ms: How long, at most, between reconnection attempts after an outage.
        tls: TLS (or mutual TLS) settings; None: plaintext.
        token: A bearer token sent with every call (``authorization: Bearer <token>``); None: none.

    Example:
        >>> client = CloudClient("127.0.0.1:8001", model="digits", bundle_hash=manifest.content_hash)  # doctest: +SKIP
        >>> client.infer(2, "b2", tensor).logits                                                      # doctest: +SKIP
    """

    def __init__(
        self,
        target: str,
        *,
        model: str,
        bundle_hash: str,
        timeout_s: float = 5.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        max_reconnect_backoff_ms: int = 1000,
        tls: ClientTLS | None = None,
        token: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.target, self.model, self.bundle_hash, self.timeout_s = target, model, bundle_hash, timeout_s
        route = CloudTarget.parse(target)
        self._target = route.target
        self._credentials = tls.credentials() if tls is not None else None
        self._metadata = bearer_metadata(token) if token is not None else None
        self._options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # after an outage, try to reconnect at least this often (gRPC's default backs off to 120 s)
            ("grpc.initial_reconnect_backoff_ms", min(100, max_reconnect_backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", min(100, max_reconnect_backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
            *route.options(tls),
        ]
        self._channel = self._open()
        self._stub = inference_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def _open(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self._target, options=self._options)
        return grpc.secure_channel(self._target, self._credentials, options=self._options)

    def reconnect(self) -> None:
        """Replace the channel with a new one (calls still on the old one are cancelled). A connection that lost
        data silently (a blackhole) may stay stuck after the network recovers; a fresh one does not."""
        old, channel = self._channel, self._open()
        self._channel, self._stub = channel, inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        old.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel is connected and the server reports ready; CloudUnavailable otherwise."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            ready = self._stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout_s, metadata=self._metadata).ready
        except grpc.FutureTimeoutError:
            raise CloudUnavailable(f"cloud at {self.target} not reachable within {timeout_s}s") from None
        except grpc.RpcError as err:
            raise _translate(err) from None
        if not ready:
            raise CloudUnavailable(f"cloud at {self.target} is up but not ready")

    def infer(
        self,
        split: int,
        name: str,
        tensor: np.ndarray,
        timeout_s: float | None = None,
        codec: Codec = FP32,
        boundary: TensorSpec | None = None,
    ) -> CloudReply:
        """Send ``tensor`` (the boundary tensor ``name`` at ``split``) with ``codec``; the logits and costs.
        ``boundary``: the segment boundary ``tensor`` comes from, when it is quantized (an int8 edge's uint8).

        Bytes sent are the tensor bytes on the wire: every tensor the codec sends, after compression.
        """
        return self.infer_async(split, name, tensor, timeout_s, codec, boundary).result()

    def infer_async(
        self,
        split: int,
        name: str,
        tensor: np.ndarray,
        timeout_s: float | None = None,
        codec: Codec = FP32,
        boundary: TensorSpec | None = None,
    ) -> PendingReply:
        """As :meth:`infer`, but returns at once with the request in flight (``timeout_s``: its gRPC deadline)."""
        return self.send(split, encode(codec, name, tensor, boundary), timeout_s, codec)

    def send(
        self,
        split: int,
        wire: Mapping[str, np.ndarray],
        timeout_s: float | None = None,
        codec: Codec = FP32,
        *,
        bottleneck: bool = False,
    ) -> PendingReply:
        """Send tensors already encoded with ``codec`` (:func:`protos.codecs.encode`, the first one compressed
        as the codec says); returns at once with the request in flight. Retries send the same ``wire`` again,
        without encoding it again. ``bottleneck``: the tensor is the code of the split point's bottleneck."""
        request = pb.ModelInferRequest(model_name=self.model)
        set_param(request.parameters, params.BUNDLE_HASH, self.bundle_hash)
        set_param(request.parameters, params.SPLIT_POINT, split)
        if codec != FP32:
            set_param(request.parameters, params.CODEC, codec.name)
        if bottleneck:
            set_param(request.parameters, params.BOTTLENECK, True)
        for i, (key, array) in enumerate(wire.items()):
            add_input(request, key, array, codec.compressor if i == 0 else None)
        start = time.perf_counter()
        future = self._stub.ModelInfer.future(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        return PendingReply(future, sum(len(raw) for raw in request.raw_input_contents), start)

    def ready(self, timeout_s: float | None = None) -> bool:
        """One ServerReady health check: whether the cloud answered, within ``timeout_s``, that it is ready (the
        check waits for a connection within that time). Never raises for a cloud that is down: that is ``False``."""
        timeout = timeout_s or self.timeout_s
        try:
            reply = self._stub.ServerReady(
                pb.ServerReadyRequest(), timeout=timeout, wait_for_ready=True, metadata=self._metadata
            )
            return bool(reply.ready)
        except grpc.RpcError:
            return False

    def ping(self, timeout_s: float | None = None) -> float:
        """One ServerLive round trip (a few bytes each way); its duration in ms. Measures the link's RTT."""
        start = time.perf_counter()
        try:
            self._stub.ServerLive(pb.ServerLiveRequest(), timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise _translate(err) from None
        return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
