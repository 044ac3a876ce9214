"""The wire contract: KServe v2 / Open Inference Protocol and gRPC health, plus numpy ⇄ tensor conversion.

Submodules:
    ``inference_pb2`` / ``inference_pb2_grpc``: the ``inference.GRPCInferenceService`` messages and stubs.
    ``health_pb2`` / ``health_pb2_grpc``: ``grpc.health.v1.Health``.
    ``tensors``: numpy ⇄ tensor-message conversion, re-exported here; protobuf tensor types stop there.
    ``codegen``: ``python -m protos.codegen [--check]`` regenerates (or checks) the generated stubs.

Importing this package imports numpy only; the generated modules load when first imported.
"""

from __future__ import annotations

from protos.tensors import (
    DATATYPES,
    TensorFormatError,
    add_input,
    add_output,
    datatype_of,
    get_param,
    request_inputs,
    response_outputs,
    set_param,
)

__all__ = [
    "DATATYPES",
    "TensorFormatError",
    "add_input",
    "add_output",
    "datatype_of",
    "get_param",
    "request_inputs",
    "response_outputs",
    "set_param",
]
