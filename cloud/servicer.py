"""``inference.GRPCInferenceService`` on the asyncio server: each method converts the message, asks the
repository, converts back; inference awaits its batch without holding a thread.

Model names and versions are checked against a strict pattern (:mod:`cloud.names`) before any lookup.
No try/except here: errors raised below become status codes in :class:`cloud.errors.ErrorInterceptor`.
"""

from __future__ import annotations

import time

import grpc

from cloud.names import validate_model_name, validate_version
from cloud.repository import ModelRepository
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc, params
from protos.bundle import TensorSpec
from protos.tensors import add_output, get_param, request_inputs, set_param

__all__ = ["InferenceServicer"]

SERVER_NAME = "edgesplit"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 data plane over a :class:`ModelRepository`."""

    def __init__(self, repository: ModelRepository, max_elements: int = 1 << 24) -> None:
        self._repository = repository
        self._max_elements = max_elements

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self._repository.names()))

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        self._repository.get(validate_model_name(request.name), validate_version(request.version))
        return pb.ModelReadyResponse(ready=True)  # loaded means ready: a version is published once it can serve

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        manifest = self._repository.get(validate_model_name(request.name), validate_version(request.version)).manifest
        return pb.ModelMetadataResponse(
            name=manifest.model,
            versions=self._repository.versions(manifest.model),
            platform=PLATFORM,
            inputs=[_tensor_metadata(manifest.input)],
            outputs=[_tensor_metadata(manifest.output)],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        start = time.perf_counter()
        parameters = request.parameters
        name, version = validate_model_name(request.model_name), validate_version(request.model_version)
        model = self._repository.get(name, version, get_param(parameters, params.BUNDLE_HASH))
        inputs = request_inputs(request, max_elements=self._max_elements)
        split = model.resolve_split(get_param(parameters, params.SPLIT_POINT), inputs)
        codec, bottleneck = get_param(parameters, params.CODEC), get_param(parameters, params.BOTTLENECK)
        logits = await model.infer_async(split, inputs, codec, context.time_remaining(), bottleneck)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        add_output(response, model.manifest.output.name, logits)
        set_param(response.parameters, params.SERVER_MS, (time.perf_counter() - start) * 1e3)
        return response
