"""edge/, cloud/ and netsim/ never import torch (or split/'s training code): they must run in torch-free containers."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUNTIME_MODULES = [
    "edge",
    "cloud",
    "edge.runtime",
    "edge.client",
    "edge.evaluate",
    "edge.policy",
    "edge.text",
    "edge.patience",
    "protos.texttok",
    "cloud.server",
    "cloud.servicer",
    "cloud.repository",
    "cloud.cli",
    "cloud.process",
    "protos.bundle",
    "edge.planner",
    "edge.adapt",
    "edge.plan_cli",
    "edge.device",
    "edge.batch",
    "edge.server",
    "edge.metrics",
    "edge.audit",
    "edge.auditor",
    "netsim",
    "netsim.cli",
]

# Makes any import of torch fail, as in a container that does not have it.
_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, _NoTorch())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_runtimes_leaves_torch_out() -> None:
    imports = "; ".join(f"import {m}" for m in RUNTIME_MODULES)
    code = (
        f"import sys; {imports}; bad = [m for m in sys.modules if m == 'torch' or m.startswith('split.')]; print(bad)"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["cloud", "edge"])
def test_runtime_subcommands_start_without_torch(command: str) -> None:
    code = _BLOCK_TORCH + f"from split.cli import main; raise SystemExit(main([{command!r}, '--help']))"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert f"edgesplit {command}" in result.stdout


def test_torch_blocker_really_blocks() -> None:
    result = _python(_BLOCK_TORCH + "import torch")
    assert result.returncode != 0 and "torch is not installed here" in result.stderr
