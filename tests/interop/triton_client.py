"""Talk to a KServe v2 server with NVIDIA's tritonclient: run by ``.venv-interop/bin/python``, not by pytest.

tritonclient carries its own copy of the protocol (``tritonclient.grpc.service_pb2``, protobuf 6), so this
script runs in its own virtualenv and reports what it saw as JSON on stdout; the test compares it with what
edgesplit's own client gets.

Usage:
    python tests/interop/triton_client.py TARGET MODEL CASES_JSON

``CASES_JSON`` is a list of requests: ``{"label": str, "inputs": [{"name": str, "path": "x.npy"}],
"parameters": {name: int|str}, "from_metadata": bool}``. With ``from_metadata`` the one input's name, datatype
and shape come from ``get_model_metadata`` (``-1`` is the batch), as a client that knows nothing else builds it.

Each case is sent four ways: ``tritonclient.grpc`` and ``tritonclient.grpc.aio``, each with raw tensors
(``InferInput.set_data_from_numpy``, which always fills ``raw_input_contents``) and with typed ``contents``.
tritonclient has no public way to send typed contents, so those requests are built from its bundled
``service_pb2`` and sent through its bundled ``service_pb2_grpc`` stub; the responses are read by its
``InferResult`` all the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc

# Datatype -> the typed contents field that carries it.
_TYPED = {"FP32": "fp32_contents", "INT8": "int_contents", "INT32": "int_contents", "INT64": "int64_contents"}


def _inputs(case: dict[str, Any], metadata: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, array) per input; with ``from_metadata`` name and datatype come from the metadata."""
    arrays = [(item["name"], np.load(item["path"], allow_pickle=False)) for item in case["inputs"]]
    if not case.get("from_metadata"):
        return [(name, triton.np_to_triton_dtype(array.dtype), array) for name, array in arrays]
    (spec,) = metadata["inputs"]
    ((_, array),) = arrays
    shape = [int(d) for d in spec["shape"]]
    if len(shape) != array.ndim or any(d not in (-1, a) for d, a in zip(shape, array.shape, strict=True)):
        raise SystemExit(f"metadata shape {shape} does not fit the input {list(array.shape)}")
    return [(spec["name"], spec["datatype"], array.astype(triton.triton_to_np_dtype(spec["datatype"])))]


def _raw(inputs: list[tuple[str, str, np.ndarray]], module: Any) -> list[Any]:
    built = []
    for name, datatype, array in inputs:
        infer_input = module.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        built.append(infer_input)
    return built


def _typed_request(model: str, case: dict[str, Any], inputs: list[tuple[str, str, np.ndarray]]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, id=case["label"])
    for name, datatype, array in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        getattr(tensor.contents, _TYPED[datatype]).extend(array.ravel().tolist())
    for key, value in case.get("parameters", {}).items():
        field = "string_param" if isinstance(value, str) else "int64_param"
        setattr(request.parameters[key], field, value)
    return request


def _logits(result: Any, output: str) -> list[Any]:
    array = result.as_numpy(output)
    return [str(array.dtype), list(array.shape), array.tolist()]


def _metadata(client: Any, model: str) -> dict[str, Any]:
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "model": client.get_model_metadata(model, as_json=True),
    }


def run_sync(target: str, model: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything with ``tritonclient.grpc`` (blocking)."""
    client = triton.InferenceServerClient(target)
    report = _metadata(client, model)
    output = report["model"]["outputs"][0]["name"]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    for case in cases:
        inputs = _inputs(case, report["model"])
        result = client.infer(model, _raw(inputs, triton), request_id=case["label"], parameters=case.get("parameters"))
        report[f"{case['label']}/raw"] = _logits(result, output)
        response = stub.ModelInfer(_typed_request(model, case, inputs), timeout=30)
        report[f"{case['label']}/typed"] = _logits(triton.InferResult(response), output)
    client.close()
    return report


async def run_aio(target: str, model: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything with ``tritonclient.grpc.aio`` (asyncio)."""
    client = triton_aio.InferenceServerClient(target)
    report = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
        "server": await client.get_server_metadata(as_json=True),
        "model": await client.get_model_metadata(model, as_json=True),
    }
    output = report["model"]["outputs"][0]["name"]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for case in cases:
            inputs = _inputs(case, report["model"])
            result = await client.infer(
                model, _raw(inputs, triton_aio), request_id=case["label"], parameters=case.get("parameters")
            )
            report[f"{case['label']}/raw"] = _logits(result, output)
            response = await stub.ModelInfer(_typed_request(model, case, inputs), timeout=30)
            report[f"{case['label']}/typed"] = _logits(triton.InferResult(response), output)
    await client.close()
    return report


def main(argv: list[str]) -> int:
    """Print ``{"sync": {...}, "aio": {...}}``: metadata as tritonclient read it and logits per case and way."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    target, model, cases_path = argv
    with open(cases_path) as fh:
        cases = json.load(fh)
    report = {"sync": run_sync(target, model, cases), "aio": asyncio.run(run_aio(target, model, cases))}
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
