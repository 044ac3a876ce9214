"""The edge's gRPC client for the cloud: one channel, one stub, requests built without extra copies."""

from __future__ import annotations

import time
from typing import NamedTuple

import grpc
import numpy as np

from edge.errors import CloudRejected, CloudUnavailable, EdgeError
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.codecs import Codec, encode
from protos.tensors import add_input, get_param, response_outputs, set_param

__all__ = ["CloudClient", "CloudReply"]


class CloudReply(NamedTuple):
    """The cloud's answer: logits, tensor bytes sent, the round trip as the edge saw it and the server's own time."""

    logits: np.ndarray
    bytes_sent: int
    rpc_ms: float
    server_ms: float


FP32 = Codec()

# Status codes after which the edge may fall back and try again later; any other code is a rejection.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def _translate(err: grpc.RpcError) -> EdgeError:
    code, details = err.code(), err.details()
    kind = CloudUnavailable if code in _TRANSIENT else CloudRejected
    return kind(f"cloud answered {code.name}: {details}")


class CloudClient:
    """Sends split tensors to ``target`` (``host:port``) for ``model`` and returns the logits.

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
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.target, self.model, self.bundle_hash, self.timeout_s = target, model, bundle_hash, timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = inference_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel is connected and the server reports ready; CloudUnavailable otherwise."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            ready = self._stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout_s).ready
        except grpc.FutureTimeoutError:
            raise CloudUnavailable(f"cloud at {self.target} not reachable within {timeout_s}s") from None
        except grpc.RpcError as err:
            raise _translate(err) from None
        if not ready:
            raise CloudUnavailable(f"cloud at {self.target} is up but not ready")

    def infer(
        self, split: int, name: str, tensor: np.ndarray, timeout_s: float | None = None, codec: Codec = FP32
    ) -> CloudReply:
        """Send ``tensor`` (the boundary tensor ``name`` at ``split``) with ``codec``; the logits and costs.

        Bytes sent are the tensor bytes on the wire: every tensor the codec sends, after compression.
        """
        request = pb.ModelInferRequest(model_name=self.model)
        set_param(request.parameters, params.BUNDLE_HASH, self.bundle_hash)
        set_param(request.parameters, params.SPLIT_POINT, split)
        if codec != FP32:
            set_param(request.parameters, params.CODEC, codec.name)
        for i, (key, array) in enumerate(encode(codec, name, tensor).items()):
            add_input(request, key, array, codec.compressor if i == 0 else None)
        start = time.perf_counter()
        try:
            response = self._stub.ModelInfer(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as err:
            raise _translate(err) from None
        rpc_ms = (time.perf_counter() - start) * 1e3
        outputs = response_outputs(response)
        if len(outputs) != 1:
            raise CloudRejected(f"expected one output from the cloud, got {list(outputs)}")
        server_ms = get_param(response.parameters, params.SERVER_MS, 0.0)
        return CloudReply(
            next(iter(outputs.values())),
            sum(len(raw) for raw in request.raw_input_contents),
            rpc_ms,
            float(server_ms) if isinstance(server_ms, int | float) else 0.0,
        )

    def ping(self, timeout_s: float | None = None) -> float:
        """One ServerLive round trip (a few bytes each way); its duration in ms. Measures the link's RTT."""
        start = time.perf_counter()
        try:
            self._stub.ServerLive(pb.ServerLiveRequest(), timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as err:
            raise _translate(err) from None
        return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
