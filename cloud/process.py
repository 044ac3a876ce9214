"""Run ``edgesplit cloud`` in a subprocess and know when it is ready (for demos, tests and benchmarks)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["CloudProcess"]

_READY = re.compile(r"serving .* on (?P<host>[^\s:]+):(?P<port>\d+)")
_METRICS = re.compile(r"metrics on http://[^\s]*:(?P<port>\d+)/metrics")


class CloudProcess:
    """``with CloudProcess(bundle) as cloud: cloud.target`` — a cloud server on 127.0.0.1, a free port.

    Readiness is the server's own "serving ... on HOST:PORT" line, printed after it has bound and started;
    callers then wait on the gRPC channel. The process gets SIGTERM on exit (graceful drain).
    """

    def __init__(self, bundles: Sequence[str | Path], extra_args: Sequence[str] = (), timeout_s: float = 60.0) -> None:
        self.command = [sys.executable, "-m", "split.cli", "cloud", "--port", "0"]
        for b in bundles:
            self.command += ["--bundle", str(b)]
        self.command += list(extra_args)
        self.timeout_s = timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.target = ""
        self.metrics_port = 0
        self.log = ""

    def start(self) -> str:
        """Start the server; returns ``host:port`` once it says it is serving."""
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        assert self.process.stdout is not None
        match = None
        while match is None:  # each readline blocks until a line or the process exits
            line = self.process.stdout.readline()
            if not line:
                break
            if metrics := _METRICS.search(line):
                self.metrics_port = int(metrics["port"])
            match = _READY.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"cloud server did not start (exit code {self.process.returncode}): {self.log[-2000:]}")
        self.target = f"{match['host']}:{match['port']}"
        return self.target

    def stop(self) -> int | None:
        """SIGTERM, wait, and return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._stderr.seek(0)
        self.log = self._stderr.read()
        self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> CloudProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
