"""A load generator for a KServe v2 server: N closed-loop clients (each sends its next request when the last one is
answered) on one asyncio loop, in a subprocess of its own.

Requests are built and serialised once, before the clock starts, and sent as bytes: the generator spends as little
CPU as it can, since it shares the machine with the server it measures. Torch-free.

Example:
    >>> result = run_load("127.0.0.1:8001", Path("x.npy"), "vgg_fashion-mnist", split=2, clients=32)  # doctest: +SKIP
    >>> result.throughput_rps, result.p99_ms                                                          # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from protos import inference_pb2 as pb
from protos import params
from protos.tensors import add_input, set_param

__all__ = ["LoadResult", "requests_for", "run_load"]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class LoadResult:
    """One run: ``clients`` concurrent edges for ``seconds``; latencies of the answered requests."""

    clients: int
    seconds: float
    requests: int
    errors: dict[str, int]
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float


def requests_for(inputs: np.ndarray, model: str, input_name: str, split: int) -> list[bytes]:
    """One serialised ModelInferRequest per sample of ``inputs`` (each a batch of one)."""
    out = []
    for sample in inputs:
        request = pb.ModelInferRequest(model_name=model)
        add_input(request, input_name, np.ascontiguousarray(sample[None]))
        set_param(request.parameters, params.SPLIT_POINT, split)
        out.append(request.SerializeToString())
    return out


async def _drive(target: str, payloads: list[bytes], clients: int, seconds: float, warmup_s: float) -> LoadResult:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(MODEL_INFER)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        measuring = False
        stop_at = time.perf_counter() + warmup_s + seconds

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    await call(payloads[i % len(payloads)], timeout=30)
                except grpc.aio.AioRpcError as exc:
                    if measuring:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                finally:
                    i += clients
                if measuring:
                    latencies.append(time.perf_counter() - start)

        tasks = [asyncio.ensure_future(client(k)) for k in range(clients)]
        await asyncio.sleep(warmup_s)
        measuring, began = True, time.perf_counter()
        await asyncio.gather(*tasks)
        took = time.perf_counter() - began
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return LoadResult(
        clients=clients,
        seconds=round(took, 3),
        requests=len(latencies),
        errors=errors,
        throughput_rps=len(latencies) / took,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
    )


def run_load(
    target: str,
    inputs: Path,
    model: str,
    split: int,
    clients: int,
    seconds: float = 4.0,
    warmup_s: float = 1.0,
    input_name: str = "",
) -> LoadResult:
    """Run one load in a subprocess (its own interpreter and GIL) and return what it measured."""
    command = [sys.executable, "-m", "benchmarks.load", target, str(inputs), model, str(split), str(clients)]
    command += ["--seconds", str(seconds), "--warmup-s", str(warmup_s), "--input-name", input_name]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + warmup_s + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return LoadResult(**json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.load TARGET INPUTS.npy MODEL SPLIT CLIENTS``: print one run's LoadResult as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("inputs", type=Path, help=".npy of samples [N, ...] (float32), the tensor at the split")
    parser.add_argument("model")
    parser.add_argument("split", type=int)
    parser.add_argument("clients", type=int)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--input-name", default="", help="the input tensor's name")
    args = parser.parse_args(argv)
    inputs = np.load(args.inputs, allow_pickle=False)
    payloads = requests_for(inputs, args.model, args.input_name, args.split)
    result = asyncio.run(_drive(args.target, payloads, args.clients, args.seconds, args.warmup_s))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
