"""Container health probe (Docker ``HEALTHCHECK``): exit 0 when the server answers, 1 otherwise. No grpcurl needed.

    python /app/healthcheck.py --grpc-health 127.0.0.1:8001   # grpc.health.v1.Health/Check, SERVING (the cloud)
    python /app/healthcheck.py --kserve-ready 127.0.0.1:8000  # inference ServerReady, ready (the edge)
    python /app/healthcheck.py --http http://127.0.0.1:8474/version   # an HTTP 200 (netsim's API)

``--service NAME`` asks grpc.health.v1 about one service (default "": the server as a whole).
"""

from __future__ import annotations

import argparse
import sys
import urllib.request


def _grpc_health(target: str, service: str, timeout: float) -> bool:
    import grpc

    from protos import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _kserve_ready(target: str, timeout: float) -> bool:
    import grpc

    from protos import inference_pb2, inference_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=timeout).ready)


def _http(url: str, timeout: float) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bool(response.status == 200)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    probe = parser.add_mutually_exclusive_group(required=True)
    probe.add_argument("--grpc-health", metavar="HOST:PORT")
    probe.add_argument("--kserve-ready", metavar="HOST:PORT")
    probe.add_argument("--http", metavar="URL")
    parser.add_argument("--service", default="", help="grpc.health.v1 service name (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)
    try:
        if args.grpc_health:
            ok = _grpc_health(args.grpc_health, args.service, args.timeout)
        elif args.kserve_ready:
            ok = _kserve_ready(args.kserve_ready, args.timeout)
        else:
            ok = _http(args.http, args.timeout)
    except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`'s health log
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("healthy" if ok else "unhealthy: not serving")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
