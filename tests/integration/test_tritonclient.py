"""NVIDIA's tritonclient (sync and asyncio, raw and typed tensors) works against ``edgesplit cloud``.

tritonclient needs protobuf<7 and edgesplit pins 7, so it lives in its own virtualenv (``.venv-interop``, built
by ``make install`` from ``constraints-interop.txt``) and runs ``tests/interop/triton_client.py`` in a
subprocess; what it got is compared with what edgesplit's own client gets from the same server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from cloud.server import CloudConfig, CloudServer
from protos import inference_pb2 as pb
from protos import params
from protos.bundle import Bundle
from protos.codecs import Codec, encode
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param

SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "triton_client.py"
BATCH = 3


def _edge_tensor(bundle: Bundle, split: int, x: np.ndarray) -> np.ndarray:
    """The tensor the edge sends at ``split``: segments ``[0, split)`` run on ``x``."""
    for segment in bundle.manifest.segments[:split]:
        session = ort.InferenceSession(str(bundle.file(segment.file)), providers=["CPUExecutionProvider"])
        x = session.run(None, {segment.input.name: x})[0]
    return x


def _cases(bundle: Bundle, tmp_path: Path) -> list[dict[str, Any]]:
    """A plain request for the model's input, and the split tensor as the edge sends it, in fp32 and int8."""
    manifest = bundle.manifest
    x = np.random.default_rng(7).standard_normal((BATCH, *manifest.input.sample_shape)).astype(np.float32)
    split = manifest.default_split
    tensor = _edge_tensor(bundle, split, x)
    name = manifest.split_point(split).tensor.name
    common = {params.SPLIT_POINT: split, params.BUNDLE_HASH: manifest.content_hash}
    wires = {
        "model-input": ({manifest.input.name: x}, {}),
        f"split{split}-fp32": ({name: tensor}, common),
        f"split{split}-int8": (encode(Codec("int8"), name, tensor), {**common, params.CODEC: "int8"}),
    }
    cases = []
    for label, (arrays, parameters) in wires.items():
        inputs = []
        for key, array in arrays.items():
            np.save(tmp_path / f"{label}.{key}.npy", array)
            inputs.append({"name": key, "path": str(tmp_path / f"{label}.{key}.npy")})
        cases.append(
            {"label": label, "inputs": inputs, "parameters": parameters, "from_metadata": label == "model-input"}
        )
    return cases


def _ours(stub: GRPCInferenceServiceStub, model: str, case: dict[str, Any]) -> np.ndarray:
    """The logits edgesplit's own wire code gets for the same case."""
    request = pb.ModelInferRequest(model_name=model)
    for item in case["inputs"]:
        add_input(request, item["name"], np.load(item["path"], allow_pickle=False))
    for key, value in case["parameters"].items():
        set_param(request.parameters, key, value)
    (logits,) = response_outputs(stub.ModelInfer(request, timeout=30)).values()
    return logits


def _run_tritonclient(python: Path, target: str, model: str, cases_path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), str(SCRIPT), target, model, str(cases_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"tritonclient script failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def report(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory, interop_python: Path) -> Iterator[dict[str, Any]]:
    """What tritonclient saw (``sync``, ``aio``) and our own logits per case (``ours``), from one real server."""
    tmp_path = tmp_path_factory.mktemp("tritonclient")
    cases = _cases(bundle, tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            got = _run_tritonclient(interop_python, target, bundle.manifest.model, tmp_path / "cases.json")
            stub = GRPCInferenceServiceStub(channel)
            got["ours"] = {case["label"]: _ours(stub, bundle.manifest.model, case) for case in cases}
        yield got
    finally:
        server.stop(grace=1.0)


@pytest.mark.parametrize("mode", ["sync", "aio"])
def test_tritonclient_health_and_metadata(report: dict[str, Any], bundle: Bundle, mode: str) -> None:
    seen, manifest = report[mode], bundle.manifest
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["server"]["name"] == "edgesplit"
    model = seen["model"]
    assert (model["name"], model["versions"], model["platform"]) == (manifest.model, ["1"], "onnxruntime_onnx")
    for key, spec in (("inputs", manifest.input), ("outputs", manifest.output)):
        (meta,) = model[key]
        # protobuf's JSON writes int64 as strings; -1 is the batch dimension
        assert (meta["name"], meta["datatype"], [int(d) for d in meta["shape"]]) == (
            spec.name,
            spec.datatype,
            list(spec.shape),
        )
        assert int(meta["shape"][0]) == -1


@pytest.mark.parametrize("mode", ["sync", "aio"])
@pytest.mark.parametrize("contents", ["raw", "typed"])
def test_tritonclient_logits_match_ours(report: dict[str, Any], bundle: Bundle, mode: str, contents: str) -> None:
    classes = len(bundle.manifest.classes)
    for label, ours in report["ours"].items():
        dtype, shape, values = report[mode][f"{label}/{contents}"]
        assert (dtype, shape) == ("float32", [BATCH, classes]), label
        theirs = np.asarray(values, dtype=np.float32)
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6, err_msg=f"{mode} {contents} {label}")
        np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1), err_msg=label)
