"""Run a real Triton Inference Server on an exported model repository (for tests, benchmarks and the compose file).

``edgesplit export --format triton`` writes a repository for NVIDIA's Triton. Where NVIDIA's container is not at
hand, the ``nvidia-pytriton`` wheel carries a real ``tritonserver`` binary (Triton 2.51) with only the python
backend. This module starts that binary the way PyTriton does, without importing anything of PyTriton:

- the server lives in its own virtualenv (``.venv-triton``, built by ``make`` from ``constraints-triton.txt``):
  its python-backend stub is built against numpy 1, so that environment pins numpy < 2;
- ``pytriton/tritonserver`` is copied to a scratch directory; the stub for the venv's Python goes into
  ``backends/python/``, and ``cloud/triton_backend/onnxruntime/model.py`` into ``backends/onnxruntime/``, where
  Triton looks for the ``onnxruntime`` backend that ``platform: "onnxruntime_onnx"`` names: with no C++ library
  there it runs that file on the python backend (see its docstring for what it stands in for);
- ``LD_LIBRARY_PATH`` is the wheel's ``nvidia_pytriton.libs`` plus the interpreter's LIBDIR, the venv's ``bin``
  comes first on ``PATH`` (the stub finds its packages through ``python3``), every endpoint is on 127.0.0.1.

Readiness is the gRPC channel connecting and ``ServerReady`` answering true (Triton opens its endpoints after it
has loaded the repository); :meth:`TritonServer.stop` sends SIGTERM to the server's PID, and SIGKILL to its
process group only when it does not exit in time.

Example:
    >>> with TritonServer("triton-repo") as triton:          # doctest: +SKIP
    ...     print(triton.grpc_target)                        # 127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc

from protos import inference_pb2 as pb
from protos.inference_pb2_grpc import GRPCInferenceServiceStub

__all__ = ["BACKEND", "DEFAULT_VENV", "TritonServer", "free_port"]

DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-triton"
"""The server's own virtualenv, built by ``make`` (``.venv-triton`` at the repository root)."""

BACKEND = Path(__file__).resolve().parent / "triton_backend" / "onnxruntime" / "model.py"
"""The python-backend stand-in for Triton's C++ onnxruntime backend."""

_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({'purelib': sysconfig.get_paths()['purelib'],"
    " 'libdir': sysconfig.get_config_var('LIBDIR'), 'version': f'{sys.version_info[0]}.{sys.version_info[1]}'}))"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (Triton takes no port 0: it would not say which port it bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonServer:
    """``with TritonServer(repo) as triton: triton.grpc_target`` — Triton on ``repo``, endpoints on 127.0.0.1.

    Args:
        repo: The model repository (``edgesplit export --format triton --out REPO``).
        venv: The server's virtualenv (numpy < 2, onnxruntime, nvidia-pytriton).
        grpc_port: The gRPC port; 0 picks a free one (likewise the HTTP port). Metrics are off.
        threads: ONNX Runtime intra-op threads per model instance in the stand-in backend (0: ONNX Runtime's own).
        timeout_s: How long to wait for readiness and, on stop, for the server to exit.
        log_verbose: Triton's ``--log-verbose`` level.
    """

    def __init__(
        self,
        repo: str | Path,
        venv: str | Path = DEFAULT_VENV,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        threads: int = 1,
        timeout_s: float = 120.0,
        log_verbose: int = 0,
    ) -> None:
        self.repo, self.venv = Path(repo).resolve(), Path(venv)
        if not (self.venv / "bin" / "python").is_file():
            raise FileNotFoundError(
                f"{self.venv}/bin/python is missing: run `make install` (it builds .venv-triton with Triton)"
            )
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.grpc_port, self.http_port = grpc_port or free_port(), http_port or free_port()
        self.threads, self.timeout_s, self.log_verbose = threads, timeout_s, log_verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ""
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def grpc_target(self) -> str:
        """``127.0.0.1:PORT`` of the KServe v2 gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None, "not started"
        return self.process.pid

    def _layout(self, scratch: Path) -> tuple[Path, dict[str, str]]:
        """Copy the server into ``scratch`` with the stub and the stand-in backend; its binary and environment."""
        probe = subprocess.run([str(self.venv / "bin" / "python"), "-c", _PROBE], capture_output=True, text=True)
        if probe.returncode != 0:
            raise RuntimeError(f"{self.venv}/bin/python does not run: {probe.stderr[-1000:]}")
        found = json.loads(probe.stdout)
        site = Path(found["purelib"])
        source = site / "pytriton" / "tritonserver"
        if not (source / "bin" / "tritonserver").is_file():
            raise FileNotFoundError(f"{source}/bin/tritonserver is missing: is nvidia-pytriton in {self.venv}?")
        server = scratch / "tritonserver"
        shutil.copytree(source, server, symlinks=True, ignore=shutil.ignore_patterns("python_backend_stubs"))
        stub = source / "python_backend_stubs" / found["version"] / "triton_python_backend_stub"
        if not stub.is_file():
            raise FileNotFoundError(f"no python-backend stub for Python {found['version']} in {source}")
        shutil.copy2(stub, server / "backends" / "python" / stub.name)
        (server / "backends" / "onnxruntime").mkdir(exist_ok=True)
        shutil.copyfile(BACKEND, server / "backends" / "onnxruntime" / "model.py")
        env = dict(os.environ)
        libs = [str(site / "nvidia_pytriton.libs"), found["libdir"], env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        env["PATH"] = f"{self.venv.resolve() / 'bin'}:{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv.resolve())
        env["EDGESPLIT_TRITON_THREADS"] = str(self.threads)
        return server, env

    def command(self, server: Path) -> list[str]:
        """The ``tritonserver`` command line (the binary under ``server``)."""
        return [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={server / 'backends'}",
            f"--cache-directory={server / 'caches'}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self) -> str:
        """Start the server; returns the gRPC target once Triton reports ready (RuntimeError with its log if not)."""
        self._scratch = tempfile.TemporaryDirectory(prefix="edgesplit-triton-")
        scratch = Path(self._scratch.name)
        server, env = self._layout(scratch)
        self._log_path = scratch / "tritonserver.log"
        with self._log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(server), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.grpc_target

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout_s
        with grpc.insecure_channel(self.grpc_target) as channel:
            ready = grpc.channel_ready_future(channel)
            while True:  # the channel's own connection attempts; each wait is bounded so a dead server is seen
                if self.process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited ({self.process.returncode}):\n{self.read_log()[-4000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tritonserver not ready within {self.timeout_s}s:\n{self.read_log()[-4000:]}")
                try:
                    ready.result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    continue
            stub = GRPCInferenceServiceStub(channel)
            if not stub.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout_s, wait_for_ready=True).ready:
                raise RuntimeError(f"tritonserver is up but not ready:\n{self.read_log()[-4000:]}")

    def read_log(self) -> str:
        """What the server printed so far."""
        path = getattr(self, "_log_path", None)
        return path.read_text(errors="replace") if path is not None and path.exists() else self.log

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests); :meth:`stop` still cleans up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int | None:
        """SIGTERM to the server's PID, wait; SIGKILL to its process group past ``timeout_s``. The exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # the python-backend stubs: gone with the server, or now
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log = self.read_log()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
