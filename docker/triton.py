"""Lay out and start Triton in the triton image (``docker/triton.Dockerfile``, compose's ``triton`` service).

    python triton.py layout --backend model.py   # at build time, in the image's own virtualenv
    python /app/triton.py serve [ARG ...]        # exec tritonserver on /models; ARGs go to tritonserver

``layout`` arranges the ``nvidia-pytriton`` wheel's server in place, as :mod:`cloud.tritonserver` does in a scratch
copy: the python-backend stub for this interpreter's Python goes into ``backends/python/``, the stand-in for the
C++ onnxruntime backend (``cloud/triton_backend/onnxruntime/model.py``) into ``backends/onnxruntime/``, and the
stubs for other Pythons are removed. ``serve`` sets ``LD_LIBRARY_PATH`` (the wheel's ``nvidia_pytriton.libs`` and
the interpreter's LIBDIR) and ``PATH`` (this virtualenv's ``bin`` first: the stub finds numpy and onnxruntime
through ``python3``) and replaces itself with ``tritonserver``: gRPC on :8001, HTTP on :8000, metrics on :8002,
every model loaded before it reports ready. Standard library only: it runs in the Triton virtualenv (numpy < 2),
where edgesplit is not installed.

Environment (optional): ``EDGESPLIT_TRITON_REPO`` (``/models``), ``EDGESPLIT_TRITON_THREADS`` (ONNX Runtime
intra-op threads per model instance in the stand-in backend; 0: ONNX Runtime's own; default 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path

GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002


def server_dir() -> Path:
    """The wheel's ``pytriton/tritonserver`` in this interpreter's site-packages."""
    server = Path(sysconfig.get_paths()["purelib"]) / "pytriton" / "tritonserver"
    if not (server / "bin" / "tritonserver").is_file():
        raise SystemExit(f"triton: {server}/bin/tritonserver is missing: is nvidia-pytriton installed here?")
    return server


def layout(backend: Path) -> Path:
    """Put this Python's stub and the stand-in backend where Triton looks; drop the other stubs."""
    server = server_dir()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stubs = server / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        found = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
        raise SystemExit(f"triton: no python-backend stub for Python {version} (the wheel has: {found})")
    shutil.copy2(stub, server / "backends" / "python" / stub.name)
    (server / "backends" / "onnxruntime").mkdir(exist_ok=True)
    shutil.copyfile(backend, server / "backends" / "onnxruntime" / "model.py")
    shutil.rmtree(stubs)
    return server


def serve_env(server: Path, environ: dict[str, str]) -> dict[str, str]:
    """The server's environment: the wheel's libraries and the interpreter's on the loader path, the venv first."""
    env = dict(environ)
    libs = [str(server.parent.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR") or "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [*libs, env.get("LD_LIBRARY_PATH", "")] if p)
    venv = Path(sys.prefix)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def serve_argv(server: Path, repo: str, extra: list[str]) -> list[str]:
    """``tritonserver`` on ``repo``, every endpoint on 0.0.0.0; ``extra`` last (a later flag wins)."""
    return [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={server / 'backends'}",
        f"--cache-directory={server / 'caches'}",
        "--grpc-address=0.0.0.0",
        f"--grpc-port={GRPC_PORT}",
        "--http-address=0.0.0.0",
        f"--http-port={HTTP_PORT}",
        "--allow-metrics=true",
        f"--metrics-port={METRICS_PORT}",
        "--allow-gpu-metrics=false",
        "--exit-on-error=true",
        "--strict-readiness=true",
        *extra,
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("layout").add_argument("--backend", type=Path, required=True, help="the stand-in model.py")
    commands.add_parser("serve").add_argument("extra", nargs=argparse.REMAINDER, help="more tritonserver flags")
    args = parser.parse_args(argv)
    if args.command == "layout":
        print(f"triton: laid out {layout(args.backend)}")
        return 0
    server = server_dir()
    repo = os.environ.get("EDGESPLIT_TRITON_REPO", "").strip() or "/models"
    command = serve_argv(server, repo, args.extra)
    print("triton: " + " ".join(command), file=sys.stderr, flush=True)
    os.execve(command[0], command, serve_env(server, dict(os.environ)))
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
