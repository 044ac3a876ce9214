"""The cloud server answers gRPC server reflection: a client with no stubs lists the services and resolves
``inference.GRPCInferenceService`` down to its methods and message fields."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

EXPECTED = {"inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_reflection_lists_the_services(cloud: str) -> None:
    with grpc.insecure_channel(cloud) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert services == EXPECTED


def test_reflection_resolves_the_inference_service(cloud: str) -> None:
    """A fresh pool (not the default one the server's stubs live in) is filled from the server alone."""
    with grpc.insecure_channel(cloud) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        infer = service.FindMethodByName("ModelInfer")
        health = pool.FindServiceByName("grpc.health.v1.Health")
    assert infer.input_type.full_name == "inference.ModelInferRequest"
    assert infer.output_type.full_name == "inference.ModelInferResponse"
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata"} <= set(
        service.methods_by_name
    )
    assert "raw_input_contents" in infer.input_type.fields_by_name
    assert {"Check", "Watch"} <= set(health.methods_by_name)
