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

INT8_EDGE = "int8edge"
"""The model-name prefix of the int8-edge bundle's tails (its default split point, fp32 and int8) in the repository."""


@pytest.fixture(scope="session")
def int8_edge_bundle(trained, digits, tmp_path_factory: pytest.TempPathFactory) -> Bundle:  # type: ignore[no-untyped-def]
    """The session bundle with its edge quantized to int8 (uint8 boundaries), thresholds recalibrated."""
    from benchmarks.edge import int8_bundle
    from split.pipeline import BundleConfig

    fp32, net, _ = trained
    out = tmp_path_factory.mktemp("int8-edge") / "bundle"
    return int8_bundle(fp32, out, net, digits, BundleConfig(default_split=fp32.manifest.default_split))


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """``.venv-triton``: ``make install`` builds it from ``constraints-triton.txt``; CI runs these tests."""
    if not (DEFAULT_VENV / "bin" / "python").is_file():
        pytest.fail(f"{DEFAULT_VENV} is missing: run `make install` (it builds .venv-triton with Triton)")
    return DEFAULT_VENV


@pytest.fixture(scope="session")
def triton_repo(bundle: Bundle, int8_edge_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edgesplit export --format triton`` of the bundle (every split point and wire format), plus the int8-edge
    bundle's default split point (``int8edge_s<default>_{fp32,int8}``) and two stale tails
    (``stale_s<default>_{fp32,int8}``: the same tails, another bundle's hash) for the handshake test."""
    from split.cli import main
    from split.triton import write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    for source, prefix in ((bundle, []), (int8_edge_bundle, ["--model-name", INT8_EDGE])):
        argv = ["export", "--format", "triton", "--from-bundle", str(source.root), "--out", str(repo)]
        assert main([*argv, "--max-queue-delay-us", str(QUEUE_DELAY_US), *prefix]) == 0
    other = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, content_hash=STALE_HASH))
    write_repository(other, repo, prefix=STALE)
    for path in repo.iterdir():  # of the extra prefixes, only the default split point's fp32 and int8 stay
        kept = path.name.endswith(
            (f"_s{bundle.manifest.default_split}_fp32", f"_s{bundle.manifest.default_split}_int8")
        )
        if path.name.startswith((f"{STALE}_", f"{INT8_EDGE}_")) and not kept:
            shutil.rmtree(path)
    return repo


@pytest.fixture(scope="session")
def triton(triton_repo: Path, triton_venv: Path) -> Iterator[TritonServer]:
    """Triton on ``triton_repo``, ready (every model loaded); stopped by its PID at the end of the session."""
    with TritonServer(triton_repo, triton_venv) as server:
        yield server
