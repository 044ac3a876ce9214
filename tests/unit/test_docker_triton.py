"""docker/triton.py and docker/launch.py: the triton image's layout and command line, the edge's cloud engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docker_{name}", _DOCKER / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


triton = _load("triton")
launch = _load("launch")


def _wheel(root: Path) -> Path:
    """A fake ``pytriton/tritonserver`` as the wheel ships it: stubs per Python, the python backend only."""
    server = root / "pytriton" / "tritonserver"
    (server / "bin").mkdir(parents=True)
    (server / "bin" / "tritonserver").write_text("")
    (server / "backends" / "python").mkdir(parents=True)
    for version in ("3.10", f"{sys.version_info[0]}.{sys.version_info[1]}"):
        (server / "python_backend_stubs" / version).mkdir(parents=True, exist_ok=True)
        (server / "python_backend_stubs" / version / "triton_python_backend_stub").write_text(version)
    return server


def test_layout_puts_this_pythons_stub_and_the_stand_in_backend_where_triton_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _wheel(tmp_path)
    monkeypatch.setattr(triton, "server_dir", lambda: server)
    backend = tmp_path / "model.py"
    backend.write_text("# the stand-in")
    assert triton.layout(backend) == server
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (server / "backends" / "python" / "triton_python_backend_stub").read_text() == version
    assert (server / "backends" / "onnxruntime" / "model.py").read_text() == "# the stand-in"
    assert not (server / "python_backend_stubs").exists()


def test_layout_without_a_stub_for_this_python_names_the_ones_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _wheel(tmp_path)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (server / "python_backend_stubs" / version / "triton_python_backend_stub").unlink()
    monkeypatch.setattr(triton, "server_dir", lambda: server)
    with pytest.raises(SystemExit, match=r"no python-backend stub for Python .*'3\.10'"):
        triton.layout(tmp_path / "model.py")


def test_serve_listens_on_every_address_and_extra_flags_come_last(tmp_path: Path) -> None:
    server = tmp_path / "site" / "pytriton" / "tritonserver"
    argv = triton.serve_argv(server, "/models", ["--log-verbose=1"])
    assert argv[0] == str(server / "bin" / "tritonserver") and argv[-1] == "--log-verbose=1"
    assert "--model-repository=/models" in argv and f"--backend-directory={server / 'backends'}" in argv
    assert {"--grpc-address=0.0.0.0", "--grpc-port=8001", "--http-port=8000", "--strict-readiness=true"} <= set(argv)
    env = triton.serve_env(server, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(tmp_path / "site" / "nvidia_pytriton.libs")
    assert env["LD_LIBRARY_PATH"].endswith(":/opt/lib") and env["PATH"] == f"{sys.prefix}/bin:/usr/bin"


def test_the_edge_offloads_to_the_engine_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESPLIT_CLOUD", "netsim-triton:9001")
    for name in ("EDGESPLIT_CLOUD_ENGINE", "EDGESPLIT_TRITON_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert "--cloud-engine" not in launch.edge_argv()
    monkeypatch.setenv("EDGESPLIT_CLOUD_ENGINE", "triton")
    monkeypatch.setenv("EDGESPLIT_TRITON_PREFIX", "digits")
    argv = launch.edge_argv()
    assert argv[argv.index("--cloud-engine") + 1] == "triton" and argv[argv.index("--triton-prefix") + 1] == "digits"
