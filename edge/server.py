"""The edge node's local endpoint: the same KServe v2 protocol the cloud speaks, served to apps on the device.

An app sends a batch of model-ready inputs to ``ModelInfer`` as to any inference server (for a bundle with image
preprocessing also uint8 RGB frames ``frame [B, H, W, 3]`` or encoded images ``image BYTES [B]``); the edge answers
it with :func:`edge.batch.infer_batch` (exits on the device, the rest offloaded, degraded local answers when the
cloud fails) and returns ``probabilities`` ``[B, classes]`` and ``label`` ``[B]``. Where each answer came from
travels in the response parameter ``edgesplit.answers``: a JSON list with, per sample, ``source``, ``exit``,
``degraded``. With an :class:`~edge.adapt.AdaptiveEdge` (``edgesplit edge --listen ... --adapt BW/RTT``) samples are
answered one by one on the adaptive route, which re-plans as the link changes; ``edgesplit.plan`` says the plan in
force.

Example:
    >>> server = EdgeServer(runtime, "127.0.0.1:0"); port = server.start()   # doctest: +SKIP
"""

from __future__ import annotations

import json
from concurrent import futures

import grpc
import numpy as np

from edge.adapt import AdaptiveEdge
from edge.batch import BatchRunner
from edge.runtime import Answer, EdgeRuntime
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.bundle import TensorSpec
from protos.byte_tensors import BYTES
from protos.preprocessing import FRAME
from protos.tensors import TensorFormatError, add_output, datatype_of, request_inputs, set_param

__all__ = ["ANSWERS", "IMAGE", "PLAN", "EdgeServer", "EdgeServicer"]

ANSWERS = "edgesplit.answers"
PLAN = "edgesplit.plan"
"""Response parameter: per sample, where its answer came from (JSON)."""
IMAGE = "image"
"""The input that carries encoded images (``BYTES [B]``); ``frame`` carries uint8 RGB frames ``[B, H, W, 3]``."""


class EdgeServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over an :class:`EdgeRuntime`: one model, the bundle's."""

    def __init__(self, runtime: EdgeRuntime, max_elements: int = 1 << 22, adaptive: AdaptiveEdge | None = None) -> None:
        self._runtime = runtime
        self._batch = BatchRunner(runtime)
        self._max_elements = max_elements
        m = runtime.manifest
        self._model, self._input, self._sample = m.model, m.input, m.input.sample_shape
        self._accepted = [TensorSpec(m.input.name, (-1, *self._sample), "FP32")]
        if runtime.inputs.takes_images:  # the bundle carries its preprocessing: frames and encoded images too
            self._accepted += [TensorSpec(FRAME, (-1, -1, -1, 3), "UINT8"), TensorSpec(IMAGE, (-1,), BYTES)]
        self._adaptive = adaptive

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)  # the edge answers even without its cloud

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        self._check_model(request.name, context)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="edgesplit-edge", version="0.1.0", extensions=[])

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self._check_model(request.name, context)
        meta = pb.ModelMetadataResponse.TensorMetadata
        classes = len(self._runtime.manifest.classes)
        return pb.ModelMetadataResponse(
            name=self._model,
            versions=["1"],
            platform="edgesplit_edge",
            inputs=[meta(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in self._accepted],
            outputs=[
                meta(name="probabilities", datatype="FP32", shape=[-1, classes]),
                meta(name="label", datatype="INT64", shape=[-1]),
            ],
        )

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        self._check_model(request.model_name, context)
        x = self._input_of(request, context)
        answers = self._answer(x)
        response = pb.ModelInferResponse(model_name=self._model, model_version="1", id=request.id)
        add_output(response, "probabilities", np.stack([a.probabilities for a in answers]).astype(np.float32))
        add_output(response, "label", np.array([a.label for a in answers], dtype=np.int64))
        where = [{"source": a.source, "exit": a.exit, "degraded": a.degraded} for a in answers]
        set_param(response.parameters, ANSWERS, json.dumps(where, separators=(",", ":")))
        if self._adaptive is not None:
            set_param(response.parameters, PLAN, self._adaptive.plan.label)
        return response

    def _answer(self, x: np.ndarray) -> list[Answer]:
        if self._adaptive is None:
            return self._batch.infer(x)
        return [self._adaptive.infer(sample) for sample in x]  # each answer teaches the estimator (may re-plan)

    def _check_model(self, name: str, context: grpc.ServicerContext) -> None:
        if name != self._model:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; this edge serves {[self._model]}")

    def _input_of(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> np.ndarray:
        """The model input ``[B, *sample]`` from the request's one input: the tensor, frames, or encoded images."""
        try:
            inputs = request_inputs(request, max_elements=self._max_elements)
        except TensorFormatError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        accepted = {t.name: t for t in self._accepted}
        (name, x), *rest = list(inputs.items()) or [("", np.zeros(0))]
        spec = accepted.get(name)
        if rest or spec is None or _datatype(x) != spec.datatype or x.ndim != len(spec.shape) or not len(x):
            got = {k: (_datatype(v), list(v.shape)) for k, v in inputs.items()}
            valid = " or ".join(f"{t.name!r} {t.datatype} {list(t.shape)}" for t in self._accepted)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected one input, {valid}; got {got}")
        try:
            return self._runtime.inputs.batch(x)
        except ValueError as err:  # a frame of the wrong shape, an image that does not decode
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: {err}")
            raise  # abort raised already; for type checkers


def _datatype(x: np.ndarray) -> str:
    return BYTES if x.dtype == object else datatype_of(x.dtype)


class EdgeServer:
    """A gRPC server for :class:`EdgeServicer` on ``address`` (``host:port``; port 0 picks a free one)."""

    def __init__(
        self,
        runtime: EdgeRuntime,
        address: str,
        workers: int = 4,
        max_message_bytes: int = 16 << 20,
        adaptive: AdaptiveEdge | None = None,
    ):
        limits = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=limits)
        servicer = EdgeServicer(runtime, max_elements=max_message_bytes // 4, adaptive=adaptive)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._address = address

    def start(self) -> int:
        """Bind and start; the bound port."""
        port = self._server.add_insecure_port(self._address)
        if port == 0:
            raise OSError(f"could not bind the edge endpoint to {self._address}")
        self._server.start()
        return port

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout``)."""
        return bool(self._server.wait_for_termination(timeout))

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop, letting requests in flight finish within ``grace`` seconds."""
        self._server.stop(grace).wait()
