"""The edge offloading to NVIDIA Triton serving ``edgesplit export --format triton``'s repository.

The repository has one model per fused tail, ``<prefix>_s<split>_<format>`` (see :mod:`split.triton`), whose
inputs are the tensors the wire format sends. So :class:`TritonClient` is a :class:`~edge.client.CloudClient`
that sends the same split tensor, by the same KServe v2 protocol and the same channel (round robin over several
``IP:PORT``, TLS, token), to the model that the repository names for the request's split point and wire format.

The bundle-hash handshake: Triton does not read ``edgesplit.`` request parameters, so the edge checks instead,
before it first sends to a model, that the model's ``config.pbtxt`` ``parameters`` carry its bundle's hash
(Triton's ``ModelConfig`` RPC, asked of every replica). A model from another bundle (a stale repository), or one
that is missing, is refused: every request for it is answered on the edge (``CloudRejected``, reason
``rejected``), the refusal is logged once and counted in :attr:`TritonClient.refused`. A model that could not be
checked (Triton unreachable) is checked again at the next request.

Compression (``+zstd``, ``+lz4``) is edgesplit's own tensor parameter, which Triton cannot undo: those codecs are
refused too.

Example:
    >>> client = TritonClient("10.0.0.5:8001,10.0.0.6:8001", model="digits", bundle_hash=h)  # doctest: +SKIP
    >>> client.verify(2, Codec("int8"))                                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edge.channel import CloudTarget
from edge.client import FP32, CloudClient, PendingReply, _translate
from edge.errors import CloudRejected, CloudUnavailable
from protos import inference_pb2 as pb
from protos import params
from protos.codecs import Codec
from protos.tensors import add_input

__all__ = ["TritonClient", "model_name"]

log = logging.getLogger(__name__)

_MODEL_CONFIG = "/inference.GRPCInferenceService/ModelConfig"


def model_name(prefix: str, split: int, codec: Codec, bottleneck: bool = False) -> str:
    """The repository's model for ``split`` and ``codec``'s wire format (as :func:`split.triton.tail_models`);
    ``bottleneck``: the split point's bottleneck tail (``<prefix>_s<split>_bn_<format>``)."""
    return f"{prefix}_s{split}_bn_{codec.format}" if bottleneck else f"{prefix}_s{split}_{codec.format}"


def _config_response_class() -> Any:
    """The part of Triton's ``ModelConfigResponse`` the handshake reads (``config.name``, ``config.parameters``):
    field numbers from Triton's ``model_config.proto``; the rest of the message is skipped as unknown fields."""
    file = descriptor_pb2.FileDescriptorProto(name="edgesplit_triton_config.proto", package="edgesplit.triton")
    file.syntax = "proto3"
    string, message = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    parameter = file.message_type.add(name="ModelParameter")
    parameter.field.add(name="string_value", number=1, type=string, label=optional)
    config = file.message_type.add(name="ModelConfig")
    config.field.add(name="name", number=1, type=string, label=optional)
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=string, label=optional)
    entry.field.add(name="value", number=2, type=message, label=optional, type_name=".edgesplit.triton.ModelParameter")
    config.field.add(
        name="parameters",
        number=14,
        type=message,
        label=repeated,
        type_name=".edgesplit.triton.ModelConfig.ParametersEntry",
    )
    response = file.message_type.add(name="ModelConfigResponse")
    response.field.add(name="config", number=1, type=message, label=optional, type_name=".edgesplit.triton.ModelConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgesplit.triton.ModelConfigResponse"))


_ConfigResponse = _config_response_class()


class TritonClient(CloudClient):
    """A :class:`~edge.client.CloudClient` for a Triton model repository exported from the edge's bundle.

    Args:
        target: As for :class:`~edge.client.CloudClient` (several ``IP:PORT``: round robin over the replicas).
        model: The repository's model-name prefix (``export --model-name``; default there: the bundle's model).
        bundle_hash: The bundle's content hash, which every model's ``config.pbtxt`` must carry.
        **kwargs: The rest of :class:`~edge.client.CloudClient`'s arguments.

    Attributes:
        refused: requests answered on the edge because their model was refused, by model name.
    """

    def __init__(self, target: str, *, model: str, bundle_hash: str, **kwargs: Any) -> None:
        super().__init__(target, model=model, bundle_hash=bundle_hash, **kwargs)
        self._replicas = len(CloudTarget.parse(target).hosts) or 1
        self._verdicts: dict[str, str | None] = {}  # model -> None (verified) or why it is refused
        self._lock = threading.Lock()
        self.refused: Counter[str] = Counter()

    def _config(self, name: str) -> dict[str, str]:
        call = self._channel.unary_unary(
            _MODEL_CONFIG,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=_ConfigResponse.FromString,
        )
        reply = call(pb.ModelMetadataRequest(name=name), timeout=self.timeout_s, metadata=self._metadata)
        return {key: value.string_value for key, value in reply.config.parameters.items()}

    def _judge(self, name: str) -> str | None:
        """Why ``name`` is refused (None: it is the edge's bundle on every replica); CloudUnavailable if unknown."""
        for _ in range(self._replicas):  # round robin: one call per replica
            try:
                found = self._config(name).get(params.BUNDLE_HASH)
            except grpc.RpcError as err:
                error = _translate(err)
                if isinstance(error, CloudUnavailable):
                    raise error from None
                return f"Triton has no usable model {name!r} ({error})"
            if found != self.bundle_hash:
                return (
                    f"Triton's model {name!r} was exported from another bundle ({found or 'no hash in its config'},"
                    f" the edge runs {self.bundle_hash}): re-export the repository"
                )
        return None

    def verify(self, split: int, codec: Codec = FP32, bottleneck: bool = False) -> str | None:
        """Check (once per model) that Triton serves this bundle's tail for ``split`` and ``codec``; why not, or
        None. Raises ``CloudUnavailable`` when Triton cannot be asked (it is asked again next time)."""
        if codec.compressor is not None:
            return f"Triton cannot decompress {codec.name}: use {codec.format} without compression"
        name = model_name(self.model, split, codec, bottleneck)
        with self._lock:
            if name in self._verdicts:
                return self._verdicts[name]
        verdict = self._judge(name)
        with self._lock:
            if name not in self._verdicts and verdict is not None:
                log.error("not offloading split point %d (%s) to Triton: %s", split, codec.name, verdict)
            self._verdicts[name] = verdict
        return verdict

    def send(
        self,
        split: int,
        wire: Mapping[str, np.ndarray],
        timeout_s: float | None = None,
        codec: Codec = FP32,
        *,
        bottleneck: bool = False,
    ) -> PendingReply:
        """As :meth:`CloudClient.send` (tensors already encoded with ``codec``), to the repository's model for
        ``split`` and ``codec``; raises ``CloudRejected`` for a refused model (the runtime answers locally) and
        ``CloudUnavailable`` when the model could not be checked yet."""
        refused = self.verify(split, codec, bottleneck)
        target = model_name(self.model, split, codec, bottleneck)
        if refused is not None:
            self.refused[target] += 1
            raise CloudRejected(refused)
        request = pb.ModelInferRequest(model_name=target)
        for key, array in wire.items():
            add_input(request, key, array)
        start = time.perf_counter()
        future = self._stub.ModelInfer.future(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        return PendingReply(future, sum(len(raw) for raw in request.raw_input_contents), start)
