"""The malformed-input suite of ``edgesplit bench cloud``: requests that are wrong in every way a client (or an
attacker) can make them, each with the status code it must get, sent many times over to a server that requires a
bearer token. Then: is the server still serving, and did its memory grow?

Torch-free; reads the server's resident memory from ``/proc/PID/status``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from benchmarks.load import MODEL_INFER
from protos import inference_pb2 as pb
from protos import params
from protos.tensors import add_input, set_param

__all__ = ["Case", "cases_for", "malformed_suite", "rss_mb"]

SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"


@dataclass(frozen=True)
class Case:
    """One malformed request: its bytes, whether it carries the token, and the status it must get."""

    name: str
    expected: str
    payload: bytes
    token: str | None


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _request(model: str, name: str, x: np.ndarray, split: int, **extra: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    add_input(request, name, x)
    set_param(request.parameters, params.SPLIT_POINT, split)
    for key, value in extra.items():
        set_param(request.parameters, key, value)  # type: ignore[arg-type]
    return request


def _bytes(request: pb.ModelInferRequest) -> bytes:
    return request.SerializeToString()


def cases_for(model: str, input_name: str, shape: tuple[int, ...], split: int, token: str) -> list[Case]:
    """The suite for a model whose tail at ``split`` takes ``input_name`` of ``shape`` (one sample, float32)."""
    good = np.zeros((1, *shape), np.float32)

    def ok(**changes: object) -> pb.ModelInferRequest:
        return _request(model, input_name, good, split, **changes)

    wrong_dtype = ok()
    wrong_dtype.inputs[0].datatype = "FP64"
    wrong_dtype.raw_input_contents[0] = np.zeros((1, *shape), np.float64).tobytes()
    wrong_shape = _request(model, input_name, np.zeros((1, 5), np.float32), split)
    short = ok()
    short.raw_input_contents[0] = good.tobytes()[:-4]
    nan, inf = good.copy(), good.copy()
    nan.flat[0], inf.flat[-1] = np.nan, np.inf
    huge = ok()
    del huge.inputs[0].shape[:]
    huge.inputs[0].shape.extend([1 << 20, 1 << 20, 1 << 20])
    negative = ok()
    negative.inputs[0].shape[0] = -1
    typed = ok()
    typed.raw_input_contents.pop()
    typed.inputs[0].contents.fp32_contents.extend([0.0] * 3)
    unknown_model, unknown_version, traversal = ok(), ok(), ok()
    unknown_model.model_name = "no-such-model"
    unknown_version.model_version = "99"
    traversal.model_name = "../../etc/passwd"
    rows = [
        ("wrong_dtype", "INVALID_ARGUMENT", _bytes(wrong_dtype), token),
        ("wrong_shape", "INVALID_ARGUMENT", _bytes(wrong_shape), token),
        ("byte_count", "INVALID_ARGUMENT", _bytes(short), token),
        ("nan", "INVALID_ARGUMENT", _bytes(_request(model, input_name, nan, split)), token),
        ("infinity", "INVALID_ARGUMENT", _bytes(_request(model, input_name, inf, split)), token),
        ("huge_declared_shape", "INVALID_ARGUMENT", _bytes(huge), token),
        ("negative_dim", "INVALID_ARGUMENT", _bytes(negative), token),
        ("typed_count", "INVALID_ARGUMENT", _bytes(typed), token),
        ("unknown_split", "INVALID_ARGUMENT", _bytes(ok(**{params.SPLIT_POINT: 99})), token),
        ("unknown_codec", "INVALID_ARGUMENT", _bytes(ok(**{params.CODEC: "bf17"})), token),
        ("stale_bundle", "FAILED_PRECONDITION", _bytes(ok(**{params.BUNDLE_HASH: "sha256:" + "0" * 64})), token),
        ("unknown_model", "NOT_FOUND", _bytes(unknown_model), token),
        ("unknown_version", "NOT_FOUND", _bytes(unknown_version), token),
        ("path_traversal", "INVALID_ARGUMENT", _bytes(traversal), token),
        ("garbage_bytes", "INVALID_ARGUMENT", b"\xff" * 64, token),
        ("missing_auth", "UNAUTHENTICATED", _bytes(ok()), None),
        ("wrong_auth", "UNAUTHENTICATED", _bytes(ok()), "not-the-token-0123456789abcdef"),
    ]
    return [Case(*row) for row in rows]


async def _send(target: str, cases: list[Case], total: int, concurrency: int) -> dict[str, dict[str, int]]:
    got: dict[str, dict[str, int]] = {c.name: {} for c in cases}
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(MODEL_INFER)
        queue = iter(range(total))

        async def worker() -> None:
            for i in queue:
                case = cases[i % len(cases)]
                metadata = (("authorization", f"Bearer {case.token}"),) if case.token else None
                try:
                    await call(case.payload, metadata=metadata, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                got[case.name][code] = got[case.name].get(code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return got


async def _alive(target: str, good: bytes, token: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        metadata = (("authorization", f"Bearer {token}"),)
        try:
            await channel.unary_unary(SERVER_LIVE)(pb.ServerLiveRequest().SerializeToString(), metadata=metadata)
            reply = await channel.unary_unary(MODEL_INFER)(good, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError:
            return False
    return bool(pb.ModelInferResponse.FromString(reply).raw_output_contents)


def malformed_suite(target: str, pid: int, cases: list[Case], good: bytes, token: str, total: int) -> dict[str, object]:
    """Send ``total`` malformed requests (the cases in turn; a first pass warms the server up), then check the
    server still answers a good request; ``rss_growth_mb`` is measured across the ``total``."""
    asyncio.run(_send(target, cases, len(cases) * 20, 16))  # warm-up: first-time allocations are not growth
    before = rss_mb(pid)
    started = time.perf_counter()
    got = asyncio.run(_send(target, cases, total, 16))
    seconds = time.perf_counter() - started
    after = rss_mb(pid)
    correct = sum(got[c.name].get(c.expected, 0) for c in cases)
    rows = [{"name": c.name, "expected": c.expected, "got": got[c.name]} for c in cases]
    return {
        "requests": total,
        "cases": rows,
        "correct_status": correct / total,
        "all_correct": correct == total,
        "server_alive": asyncio.run(_alive(target, good, token)),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "seconds": round(seconds, 2),
    }
