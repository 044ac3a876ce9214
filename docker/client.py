"""Stream a test set through the edge's KServe v2 endpoint, one sample per request, as an app on the device would;
print accuracy, where the answers came from, and latency. Torch-free: numpy, grpcio and edgesplit's ``protos``.

    python /app/client.py [--edge edge:8000] [--data /data] [--bundle /bundle] [--warmup 10] [--limit N]

``--data`` holds ``x_test.npy`` (model-ready float32 ``[N, *input shape]``) and ``y_test.npy`` (labels ``[N]``),
written on the host by ``docker/testset.py``; the model's name and input come from the bundle's manifest. The last
line, ``client: result {...}``, is the same summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.tensors import add_input, get_param, response_outputs

ANSWERS = "edgesplit.answers"  # edge.server.ANSWERS: per sample, where its answer came from
PLAN = "edgesplit.plan"  # edge.server.PLAN: an adaptive edge's plan in force


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean())}


def _ask(stub: inference_pb2_grpc.GRPCInferenceServiceStub, model: str, name: str, x: np.ndarray) -> tuple[int, dict]:
    request = pb.ModelInferRequest(model_name=model)
    add_input(request, name, np.ascontiguousarray(x[None], dtype=np.float32))
    response = stub.ModelInfer(request, timeout=30)
    label = int(response_outputs(response)["label"][0])
    where = json.loads(str(get_param(response.parameters, ANSWERS)))[0]
    if PLAN in response.parameters:
        where["plan"] = str(get_param(response.parameters, PLAN))
    return label, where


def stream(target: str, model: str, name: str, x: np.ndarray, y: np.ndarray, warmup: int) -> dict[str, object]:
    """Send every sample (after ``warmup`` untimed ones); the summary."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for sample in x[:warmup]:
            _ask(stub, model, name, sample)
        correct, sources, exits, degraded, plans = 0, Counter[str](), Counter[str](), Counter[str](), []
        latency: dict[str, list[float]] = {"all": [], "cloud": [], "exit": [], "edge": []}
        for sample, truth in zip(x, y, strict=True):
            start = time.perf_counter()
            label, where = _ask(stub, model, name, sample)
            ms = (time.perf_counter() - start) * 1e3
            correct += label == int(truth)
            sources[where["source"]] += 1
            latency["all"].append(ms)
            latency.setdefault(where["source"], []).append(ms)
            if where.get("exit"):
                exits[where["exit"]] += 1
            if where.get("degraded"):
                degraded[where["degraded"]] += 1
            if where.get("plan") and (not plans or plans[-1][1] != where["plan"]):
                plans.append((len(latency["all"]), where["plan"]))  # (request number, the plan from it on)
    return {
        "n": len(x),
        "correct": correct,
        "accuracy": correct / len(x),
        "sources": dict(sources),
        "exits": dict(sorted(exits.items())),
        "degraded": dict(degraded),
        "latency_ms": {k: _percentiles(v) for k, v in latency.items() if v},
        "plans": plans,
    }


def _print(summary: dict, target: str, model: str) -> None:
    lat = summary["latency_ms"]
    print(f"client: {summary['n']} samples through the edge at {target} (model {model}), one request each")
    print(f"client: accuracy {100 * summary['accuracy']:.2f}% ({summary['correct']}/{summary['n']})")
    exits = ", ".join(f"{k} {v}" for k, v in summary["exits"].items())
    print(f"client: answers by source {summary['sources']} (exits: {exits or 'none'}); degraded {summary['degraded']}")
    print("client: latency ms " + ", ".join(f"{k} {v:.1f}" for k, v in lat["all"].items()))
    by_source = ", ".join(f"{s} {lat[s]['p50']:.1f}" for s in ("exit", "cloud", "edge") if s in lat)
    print(f"client: latency p50 ms by source: {by_source}")
    if summary["plans"]:
        print("client: plans (from request #) " + "; ".join(f"{k}: {plan}" for k, plan in summary["plans"]))
    print("client: result " + json.dumps(summary, separators=(",", ":")), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", default="edge:8000", metavar="HOST:PORT", help="the edge's KServe v2 endpoint")
    parser.add_argument("--data", type=Path, default=Path("/data"), help="directory of x_test.npy and y_test.npy")
    parser.add_argument("--bundle", type=Path, default=Path("/bundle"), help="the bundle (for the model's name)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    args = parser.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    model, name = manifest["model"], manifest["input"]["name"]
    x = np.load(args.data / "x_test.npy", allow_pickle=False)[: args.limit]
    y = np.load(args.data / "y_test.npy", allow_pickle=False)[: args.limit]
    try:
        summary = stream(args.edge, model, name, x, y, args.warmup)
    except grpc.RpcError as err:
        print(f"client: the edge at {args.edge} failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except grpc.FutureTimeoutError:
        print(f"client: the edge at {args.edge} did not answer within 60 s", file=sys.stderr)
        return 1
    _print(summary, args.edge, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
