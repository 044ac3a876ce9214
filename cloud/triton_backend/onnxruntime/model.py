"""A stand-in for Triton's C++ ``onnxruntime`` backend, run by Triton's python backend.

``platform: "onnxruntime_onnx"`` in a model's ``config.pbtxt`` makes Triton look for the backend ``onnxruntime``;
where that backend's shared library is missing but ``<backend-directory>/onnxruntime/model.py`` exists, Triton
runs this file on its python backend for every such model. The ``nvidia-pytriton`` wheel (what runs here and in
CI) has only the python backend, so :mod:`cloud.tritonserver` puts this file there and the repository that
``edgesplit export --format triton`` writes loads unchanged. NVIDIA's Triton container has the real C++ backend
and needs nothing of this file.

What is Triton's own, and so exercised: loading the repository and every ``config.pbtxt``, the dynamic batcher
(requests merged up to ``max_batch_size``, ``preferred_batch_size``, ``max_queue_delay_microseconds``),
``instance_group``, model readiness, the KServe v2 gRPC/HTTP endpoints, metadata, ``ModelConfig`` (with the
``parameters`` that carry the bundle hash) and the statistics.

What is not: the C++ backend's own config handling (its auto-complete of configs, its optimization settings,
execution providers, its checks of the ONNX model against the config) and its zero-copy I/O: here each batch's
tensors are copied into numpy through the python backend's shared memory, concatenated, run by the ``onnxruntime``
wheel with ``1/model.onnx``, and split back into one response per request.

Runs inside Triton's python-backend stub, not in edgesplit's environment: it imports only numpy, onnxruntime and
the stub's ``triton_python_backend_utils``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One model instance: an ONNX Runtime session on the model's ``1/model.onnx`` (or its default filename)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        options = ort.SessionOptions()
        threads = int(os.environ.get("EDGESPLIT_TRITON_THREADS", "1"))
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.outputs, feeds))

    def _response(self, outputs: list[np.ndarray]) -> Any:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in zip(self.outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One run per batch of requests (the dynamic batcher's), one response per request."""
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs} for r in requests
        ]
        if not self.batched or len(requests) == 1:
            return [self._response(self._run(feed)) for feed in feeds]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        outputs = self._run(merged)
        bounds = np.cumsum(sizes)[:-1]
        parts = [np.split(output, bounds) for output in outputs]
        return [self._response([part[i] for part in parts]) for i in range(len(requests))]
