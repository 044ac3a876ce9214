"""``edgesplit demo`` end to end (short training, 20 samples): the emulated device and the network are named, the
four routes print with the sentence on the winner, and the JSON has the documented keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    command = [
        sys.executable,
        "-m",
        "split.cli",
        "demo",
        "--epochs",
        "2",
        "--width",
        "0.25",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--samples",
        "20",
        "--split",
        "1",
        "--json",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("device: cortex-m4", "network: 3g", "hybrid", "edge only", "cloud only", "planned", "full model"):
        assert row in result.stdout
    assert "The planned route (" in result.stdout and " here because " in result.stdout
    data = json.loads(out.read_text())
    assert data["dataset"] == "digits" and data["n"] == 20
    assert data["device"]["name"] == "cortex-m4" and data["device"]["factor"] > 1
    assert data["network"]["name"] == "3g" and data["network"]["rtt_ms_measured"] >= 150  # netsim's toxics
    assert set(data["routes"]) == {"hybrid", "edge_only", "cloud_only", "planned"}
    for route in data["routes"].values():
        assert route["energy_mj"] > 0 and {"p50", "p95", "mean"} <= set(route["latency_ms"])
    # the whole model on a 40 mW device against a 3G radio's per-byte energy for the raw input
    assert data["routes"]["cloud_only"]["energy_mj"] >= data["routes"]["planned"]["energy_mj"]
    for key in ("accuracy_full", "accuracy_hybrid", "offload_rate", "bytes_per_offload"):
        assert 0 <= data[key] <= (1 if key != "bytes_per_offload" else 1e9)
    assert set(data["exit_rate"]) == {"exit0"}  # split point 1: only the first exit sits on the edge
    assert abs(sum(data["exit_rate"].values()) + data["offload_rate"] - 1) < 1e-9
    assert {"p50", "p95"} <= set(data["latency_ms"])
    for name in ("edge_only", "cloud_only"):
        assert {"accuracy", "latency_ms"} <= set(data["baselines"][name])
        assert {"p50", "p95"} <= set(data["baselines"][name]["latency_ms"])
    # Same weights, no exits: the edge-only and cloud-only runs both compute the full model.
    assert data["baselines"]["edge_only"]["accuracy"] == data["baselines"]["cloud_only"]["accuracy"]
    assert abs(data["baselines"]["edge_only"]["accuracy"] - data["accuracy_full"]) < 1e-9
    assert data["baselines"]["cloud_only"]["bytes_per_offload"] == 16 * 16 * 4


def test_unknown_command_lists_valid_ones() -> None:
    result = subprocess.run([sys.executable, "-m", "split.cli", "bogus"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown command 'bogus'" in result.stderr and "demo" in result.stderr and "cloud" in result.stderr
