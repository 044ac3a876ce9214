"""Profile a small bundle as a named device, then run the edge as that device: the manifest records the device
and its factor (published reference latency / this host's), and ``edgesplit edge --device`` runs with it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge import cli as edge_cli
from edge.device import SlowSession
from edge.devices import device
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from split.cli import main


@pytest.fixture(scope="module")
def as_rpi4(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("device") / "bundle"
    shutil.copytree(bundle.root, root)
    # the reference model is exported once into the edgesplit cache ($EDGESPLIT_CACHE) and reused after
    assert main(["profile", "--bundle", str(root), "--device", "rpi4", "--runs", "3"]) == 0
    return Bundle.load(root)


def test_the_manifest_records_the_device_and_its_factor(as_rpi4: Bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    p = as_rpi4.manifest.profile
    d = p["device"]
    assert d["name"] == "rpi4" and d["threads"] == 1 and d["device_ms"] == device("rpi4").reference_ms(1)
    assert 0 < d["host_ms"] < d["device_ms"] and d["factor"] == pytest.approx(d["device_ms"] / d["host_ms"])
    assert p["edge_slowdown"] == d["factor"] and "ncnn" in d["citation"] and d["compute_w"] == 3.06


def test_the_edge_as_that_device_runs_with_the_recorded_factor(as_rpi4: Bundle, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    edge_cli.add_arguments(parser)
    args = parser.parse_args(["--bundle", str(as_rpi4.root), "--device", "rpi4"])
    factor, threads = edge_cli.device_emulation(args, as_rpi4.manifest)
    assert (factor, threads) == (as_rpi4.manifest.profile["device"]["factor"], 1)
    runtime = EdgeRuntime(as_rpi4, split=len(as_rpi4.manifest.segments), slowdown=factor)
    assert all(isinstance(s, SlowSession) and s.slowdown == factor for s in runtime._segments)
    x = np.zeros((2, *as_rpi4.manifest.input.shape[1:]), np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["edge", "--bundle", str(as_rpi4.root), "--device", "rpi4", "--input", str(tmp_path / "x.npy")]) == 0
    assert main(["edge", "--bundle", str(as_rpi4.root), "--device", "jetson-nano", "--input", "x"]) == 1
    assert "profiled for device 'rpi4', not 'jetson-nano'" in capsys.readouterr().err


def test_plan_for_energy_uses_the_profiled_device(as_rpi4: Bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["plan", "--bundle", str(as_rpi4.root), "--bandwidth", "1.1mbit", "--rtt", "150", "--link", "3g"]
    assert main([*argv, "--objective", "energy"]) == 0
    out = capsys.readouterr().out
    assert "energy: rpi4 3.06 W, 3g radio" in out and "mJ per inference" in out
    assert out.rsplit("plan: ", 1)[1].startswith(f"split {len(as_rpi4.manifest.segments)},")  # 3G's tail: stay
    assert main([*argv, "--device", "toaster"]) == 1
    assert "valid devices: rpi4, jetson-nano, sd660" in capsys.readouterr().err
    assert main([*argv, "--device", "sd660", "--objective", "energy"]) == 1
    assert "give --compute-w" in capsys.readouterr().err
