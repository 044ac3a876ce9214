"""Ask a real Triton Inference Server with NVIDIA's tritonclient: run by ``.venv-interop/bin/python``, not by pytest.

Usage:
    python tests/interop/triton_server.py TARGET PLAN_JSON

``PLAN_JSON``: ``{"cases": [{"label", "model", "inputs": [{"name", "path"}]}], "batching": {"model", "input",
"path", "requests"}}``. Prints JSON: the repository index; per model its readiness, metadata and config; per case
the logits (dtype, shape, values); and for ``batching`` the model's statistics before and after ``requests``
concurrent one-sample requests (``async_infer``, all sent before any is awaited).
"""

from __future__ import annotations

import json
import queue
import sys
import time
from typing import Any

import numpy as np
import tritonclient.grpc as triton


def _inputs(items: list[dict[str, str]]) -> list[Any]:
    built = []
    for item in items:
        array = np.load(item["path"], allow_pickle=False)
        tensor = triton.InferInput(item["name"], list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        built.append(tensor)
    return built


def _stats(client: Any, model: str) -> dict[str, int]:
    (stats,) = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return {
        "inference_count": int(stats.get("inference_count", 0)),
        "execution_count": int(stats.get("execution_count", 0)),
    }


def _batching(client: Any, plan: dict[str, Any]) -> dict[str, Any]:
    model, samples = plan["model"], np.load(plan["path"], allow_pickle=False)
    before = _stats(client, model)
    done: queue.Queue[Any] = queue.Queue()
    for i in range(plan["requests"]):
        x = samples[i % len(samples)][None]
        tensor = triton.InferInput(plan["input"], list(x.shape), triton.np_to_triton_dtype(x.dtype))
        tensor.set_data_from_numpy(x)
        client.async_infer(model, [tensor], callback=lambda result, error: done.put(error))
    errors = [done.get(timeout=60) for _ in range(plan["requests"])]
    # Triton updates its statistics after it has sent the responses: wait (bounded) until they count them all
    deadline, after = time.monotonic() + 10, _stats(client, model)
    while after["inference_count"] < before["inference_count"] + plan["requests"] and time.monotonic() < deadline:
        time.sleep(0.01)  # ok: Triton's statistics have no event to wait on; polled, bounded by the deadline
        after = _stats(client, model)
    return {"before": before, "after": after, "errors": [str(e) for e in errors if e is not None]}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target, plan_path = argv
    with open(plan_path) as fh:
        plan = json.load(fh)
    client = triton.InferenceServerClient(target)
    index = client.get_model_repository_index(as_json=True).get("models", [])
    report: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(as_json=True),
        "index": index,
        "models": {},
        "logits": {},
    }
    for entry in index:
        name = entry["name"]
        report["models"][name] = {
            "ready": client.is_model_ready(name),
            "metadata": client.get_model_metadata(name, as_json=True),
            "config": client.get_model_config(name, as_json=True)["config"],
        }
    for case in plan["cases"]:
        result = client.infer(case["model"], _inputs(case["inputs"]))
        output = report["models"][case["model"]]["metadata"]["outputs"][0]["name"]
        array = result.as_numpy(output)
        report["logits"][case["label"]] = [str(array.dtype), list(array.shape), array.tolist()]
    if plan.get("batching"):
        report["batching"] = _batching(client, plan["batching"])
    client.close()
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
