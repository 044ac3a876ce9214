"""A real Triton Inference Server loads ``edgesplit export --format triton``'s repository and answers as
``edgesplit cloud`` does.

Triton 2.51 from the nvidia-pytriton wheel (``.venv-triton``; the C++ onnxruntime backend replaced by
``cloud/triton_backend/onnxruntime/model.py`` on the python backend) serves the session bundle's repository
(fixtures in ``conftest.py``). NVIDIA's tritonclient (``.venv-interop``, in a subprocess,
``tests/interop/triton_server.py``) reads every model's readiness, metadata and config, sends the split tensor of
every split point in every wire format, and sends concurrent requests to see the dynamic batcher in Triton's own
statistics; the logits are compared with ``edgesplit cloud``'s for the same tensors.
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
from cloud.tritonserver import TritonServer
from protos import inference_pb2 as pb
from protos import params
from protos.bundle import WIRE_FORMATS, Bundle
from protos.codecs import Codec, encode
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.tensors import add_input, response_outputs, set_param
from split.triton import TRITON_TYPES, tail_models

pytestmark = pytest.mark.triton

SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "triton_server.py"
BATCH, CONCURRENT = 3, 16
QUEUE_DELAY_US, STALE, INT8_EDGE = 10_000, "stale", "int8edge"  # as conftest.py exports the repository


def _edge_tensor(bundle: Bundle, split: int, x: np.ndarray) -> np.ndarray:
    """The tensor the edge sends at ``split``: segments ``[0, split)`` run on ``x``."""
    for segment in bundle.manifest.segments[:split]:
        session = ort.InferenceSession(str(bundle.file(segment.file)), providers=["CPUExecutionProvider"])
        x = session.run(None, {segment.input.name: x})[0]
    return x


def _plan(bundle: Bundle, tmp_path: Path) -> dict[str, Any]:
    """Every tail's wire tensors (as ``.npy`` files) and the concurrent one-sample requests for batching."""
    manifest = bundle.manifest
    x = np.random.default_rng(11).standard_normal((BATCH, *manifest.input.sample_shape)).astype(np.float32)
    cases = []
    for model in tail_models(bundle):
        tensor = _edge_tensor(bundle, model.split, x)
        inputs = []
        for key, array in encode(Codec(model.format), manifest.split_point(model.split).tensor.name, tensor).items():
            np.save(tmp_path / f"{model.name}.{key}.npy", array)
            inputs.append({"name": key, "path": str(tmp_path / f"{model.name}.{key}.npy")})
        cases.append({"label": model.name, "model": model.name, "split": model.split, "format": model.format,
                      "inputs": inputs})  # fmt: skip
    split = manifest.default_split
    np.save(tmp_path / "batching.npy", _edge_tensor(bundle, split, x))
    batching = {"model": f"{manifest.model}_s{split}_fp32", "input": manifest.split_point(split).tensor.name,
                "path": str(tmp_path / "batching.npy"), "requests": CONCURRENT}  # fmt: skip
    return {"cases": cases, "batching": batching}


def _cloud_logits(stub: GRPCInferenceServiceStub, bundle: Bundle, case: dict[str, Any]) -> np.ndarray:
    """What ``edgesplit cloud`` answers for the same wire tensors."""
    request = pb.ModelInferRequest(model_name=bundle.manifest.model)
    for item in case["inputs"]:
        add_input(request, item["name"], np.load(item["path"], allow_pickle=False))
    set_param(request.parameters, params.BUNDLE_HASH, bundle.manifest.content_hash)
    set_param(request.parameters, params.SPLIT_POINT, case["split"])
    set_param(request.parameters, params.CODEC, case["format"])
    (logits,) = response_outputs(stub.ModelInfer(request, timeout=30)).values()
    return logits


@pytest.fixture(scope="module")
def report(
    bundle: Bundle, triton: TritonServer, interop_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("triton-plan")
    plan = _plan(bundle, tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    result = subprocess.run(
        [str(interop_python), str(SCRIPT), triton.grpc_target, str(tmp_path / "plan.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"tritonclient script failed:\n{result.stderr[-4000:]}\n{triton.read_log()[-2000:]}"
    seen = json.loads(result.stdout)
    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1))
    target = f"127.0.0.1:{server.start()}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = GRPCInferenceServiceStub(channel)
            seen["cloud"] = {case["label"]: _cloud_logits(stub, bundle, case) for case in plan["cases"]}
        seen["plan"] = plan
        yield seen
    finally:
        server.stop(grace=1.0)


def test_every_exported_model_is_ready(report: dict[str, Any], bundle: Bundle) -> None:
    assert (report["live"], report["ready"]) == (True, True)
    assert report["server"]["name"] == "triton" and report["server"]["version"].startswith("2.")
    extra = {
        f"{prefix}_s{bundle.manifest.default_split}_{f}" for prefix in (STALE, INT8_EDGE) for f in ("fp32", "int8")
    }
    expected = {m.name for m in tail_models(bundle)} | extra
    assert {m["name"] for m in report["index"]} == expected
    assert {m["name"]: m.get("state") for m in report["index"]} == dict.fromkeys(expected, "READY")
    assert all(model["ready"] for model in report["models"].values())


def test_metadata_and_config_match_the_bundle(report: dict[str, Any], bundle: Bundle) -> None:
    manifest = bundle.manifest
    for model in tail_models(bundle):
        seen = report["models"][model.name]
        meta, config = seen["metadata"], seen["config"]
        assert (meta["name"], meta["versions"], meta["platform"]) == (model.name, ["1"], "onnxruntime_onnx")
        batched = not model.unbatched
        assert int(config.get("max_batch_size", 0)) == (32 if batched else 0), model.name
        assert ("dynamic_batching" in config) == batched, model.name
        if batched:
            assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == QUEUE_DELAY_US
        got_inputs = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]]
        want = [(s.name, s.datatype, [-1, *s.shape[1:]] if batched else list(s.shape)) for s in model.inputs]
        assert got_inputs == want, model.name
        (output,) = meta["outputs"]
        assert (output["name"], output["datatype"]) == (manifest.output.name, manifest.output.datatype)
        assert [t["data_type"] for t in config["input"]] == [TRITON_TYPES[s.datatype] for s in model.inputs]
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        assert parameters == {params.BUNDLE_HASH: manifest.content_hash, params.SPLIT_POINT: str(model.split),
                              params.CODEC: model.format}, model.name  # fmt: skip


def test_logits_equal_edgesplit_clouds_for_every_split_point_and_wire_format(
    report: dict[str, Any], bundle: Bundle
) -> None:
    classes = len(bundle.manifest.classes)
    seen_formats = set()
    for case in report["plan"]["cases"]:
        dtype, shape, values = report["logits"][case["label"]]
        assert (dtype, shape) == ("float32", [BATCH, classes]), case["label"]
        theirs, ours = np.asarray(values, dtype=np.float32), report["cloud"][case["label"]]
        # the same ONNX file in the same ONNX Runtime version, one thread each: equal to float32 rounding
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5, err_msg=case["label"])
        np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1), err_msg=case["label"])
        seen_formats.add((case["split"], case["format"]))
    manifest = bundle.manifest
    assert seen_formats == {(sp.index, f) for sp in manifest.split_points for f in WIRE_FORMATS if f in sp.tails}


def test_triton_batches_concurrent_requests_dynamically(report: dict[str, Any]) -> None:
    batching = report["batching"]
    assert batching["errors"] == []
    before, after = batching["before"], batching["after"]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == CONCURRENT
    assert 1 <= executions < CONCURRENT, f"{CONCURRENT} requests ran in {executions} executions: no batching"
