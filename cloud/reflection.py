"""gRPC server reflection, so generic tools (``grpcurl``, ``grpcui``, Postman) can list and call the services.

Example:
    $ grpcurl -plaintext 127.0.0.1:8001 list
    grpc.health.v1.Health
    grpc.reflection.v1alpha.ServerReflection
    inference.GRPCInferenceService
"""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection

from protos import health_pb2, inference_pb2

__all__ = ["SERVICES", "enable_reflection"]

SERVICES: tuple[str, ...] = (
    inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
"""The fully-qualified names the reflection service lists: inference, health and reflection itself."""


def enable_reflection(server: grpc.Server) -> None:
    """Add the reflection service to ``server`` (before it starts), describing :data:`SERVICES`.

    The descriptors come from the default pool, where the generated ``protos/*_pb2`` modules registered them.
    """
    reflection.enable_server_reflection(SERVICES, server)
