"""The committed protobuf stubs are exactly what ``python -m protos.codegen`` generates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protos import codegen

ROOT = Path(__file__).resolve().parents[2]


def _copy_generated(target: Path) -> None:
    for relative in codegen.GENERATED:
        shutil.copyfile(ROOT / relative, target / Path(relative).name)


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "protos.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_generated_files_list_every_stub() -> None:
    assert codegen.GENERATED == (
        "protos/inference_pb2.py",
        "protos/inference_pb2.pyi",
        "protos/inference_pb2_grpc.py",
        "protos/health_pb2.py",
        "protos/health_pb2.pyi",
        "protos/health_pb2_grpc.py",
    )


def test_generated_imports_need_no_hand_edits() -> None:
    for name in ("inference_pb2_grpc.py", "health_pb2_grpc.py"):
        text = (ROOT / "protos" / name).read_text()
        assert f"from protos import {name.removesuffix('_grpc.py')} as" in text


def test_protoc_command_runs_from_the_root(tmp_path: Path) -> None:
    command = codegen.protoc_command(ROOT, tmp_path)
    assert command[:3] == [sys.executable, "-m", "grpc_tools.protoc"]
    assert f"-I{ROOT}" in command
    for flag in ("--python_out", "--pyi_out", "--grpc_python_out"):
        assert f"{flag}={tmp_path}" in command
    assert command[-2:] == ["protos/inference.proto", "protos/health.proto"]


def test_identical_copy_is_not_stale(tmp_path: Path) -> None:
    _copy_generated(tmp_path)
    assert codegen.stale_files(tmp_path) == []


def test_altered_and_missing_files_are_stale(tmp_path: Path) -> None:
    _copy_generated(tmp_path)
    altered = tmp_path / "inference_pb2.py"
    altered.write_bytes(altered.read_bytes() + b"# hand edit\n")
    (tmp_path / "health_pb2_grpc.py").unlink()
    assert codegen.stale_files(tmp_path) == ["inference_pb2.py", "health_pb2_grpc.py"]


def test_check_reports_stale_files_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_root = tmp_path / "repo"
    (fake_root / "protos").mkdir(parents=True)
    for proto in codegen.PROTOS:
        shutil.copyfile(ROOT / proto, fake_root / proto)
    _copy_generated(fake_root / "protos")
    (fake_root / "protos" / "health_pb2.pyi").write_text("stale\n")
    monkeypatch.setattr(codegen, "repo_root", lambda: fake_root)
    assert codegen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "protos/health_pb2.pyi" in err and "inference_pb2.py" not in err
    assert "python -m protos.codegen" in err


def test_regenerate_rewrites_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path / "repo"
    (fake_root / "protos").mkdir(parents=True)
    for proto in codegen.PROTOS:
        shutil.copyfile(ROOT / proto, fake_root / proto)
    monkeypatch.setattr(codegen, "repo_root", lambda: fake_root)
    assert codegen.main([]) == 0
    assert codegen.main(["--check"]) == 0
    assert (fake_root / "protos" / "inference_pb2.py").read_bytes() == (
        ROOT / "protos" / "inference_pb2.py"
    ).read_bytes()


def test_protoc_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "protos").mkdir()
    (tmp_path / "protos" / "inference.proto").write_text('syntax = "proto3"; message {')
    (tmp_path / "protos" / "health.proto").write_text('syntax = "proto3";')
    monkeypatch.setattr(codegen, "repo_root", lambda: tmp_path)
    assert codegen.main(["--check"]) == 2
    with pytest.raises(RuntimeError, match="protoc failed"):
        codegen.generate(tmp_path / "out", tmp_path)
