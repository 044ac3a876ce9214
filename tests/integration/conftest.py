"""Triton fixtures: a real Triton Inference Server (``.venv-triton``) on ``edgesplit export --format triton``'s
repository of the session's bundle, once per session (it loads 16 models in ~10 s on two cores).

The test modules that use them are marked ``triton`` (``-m "not triton"`` leaves them out; CI runs them).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.tritonserver import DEFAULT_VENV, TritonServer
from protos.bundle import Bundle

QUEUE_DELAY_US = 10_000
"""The exported dynamic batcher's queue delay: long enough that concurrent requests are merged on a busy CI."""

STALE = "stale"
"""The model-name prefix of tails exported from "another bundle" (another content hash) into the same repository."""

STALE_HASH = "sha256:" + "0" * 64


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """``.venv-triton``: ``make install`` builds it from ``constraints-triton.txt``; CI runs these tests."""
    if not (DEFAULT_VENV / "bin" / "python").is_file():
        pytest.fail(f"{DEFAULT_VENV} is missing: run `make install` (it builds .venv-triton with Triton)")
    return DEFAULT_VENV


@pytest.fixture(scope="session")
def triton_repo(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edgesplit export --format triton`` of the bundle (every split point and wire format), plus two stale
    tails (``stale_s<default>_{fp32,int8}``: the same tails, another bundle's hash) for the handshake test."""
    from split.cli import main
    from split.triton import write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    argv = ["export", "--format", "triton", "--from-bundle", str(bundle.root), "--out", str(repo)]
    assert main([*argv, "--max-queue-delay-us", str(QUEUE_DELAY_US)]) == 0
    other = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, content_hash=STALE_HASH))
    for model in write_repository(other, repo, prefix=STALE):
        if model.split != bundle.manifest.default_split or model.format not in ("fp32", "int8"):
            shutil.rmtree(repo / model.name)
    return repo


@pytest.fixture(scope="session")
def triton(triton_repo: Path, triton_venv: Path) -> Iterator[TritonServer]:
    """Triton on ``triton_repo``, ready (every model loaded); stopped by its PID at the end of the session."""
    with TritonServer(triton_repo, triton_venv) as server:
        yield server
