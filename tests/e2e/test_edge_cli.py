"""``edgesplit edge`` as a user runs it, with the cloud gone: it still starts and answers every sample, degraded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.tensors import add_input, response_outputs


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_edge_cli_answers_every_sample_locally_when_the_cloud_is_gone(bundle, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n = 12
    np.save(tmp_path / "x.npy", digits.x_test[:n])
    np.save(tmp_path / "y.npy", digits.y_test[:n])
    command = [sys.executable, "-m", "split.cli", "edge", "--bundle", str(bundle.root)]
    command += ["--cloud", f"127.0.0.1:{_closed_port()}", "--split", "1", "--timeout", "1", "--deadline-ms", "300"]
    lines = subprocess.run(
        [*command, "--input", str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120, check=True
    )
    assert "answering locally until the cloud is back" in lines.stderr
    rows = lines.stdout.strip().splitlines()
    assert len(rows) == n  # every sample answered
    assert all(("degraded:" in row) != row.split("\t")[3].startswith("exit0") for row in rows), rows
    summary = subprocess.run(
        [*command, "--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    stats = json.loads(summary.stdout)
    assert stats["n"] == n and stats["offload_rate"] == 0.0
    assert sum(stats["exit_rate"].values()) + sum(stats["degraded_rate"].values()) == pytest.approx(1.0)
    assert stats["degraded_rate"]  # some samples needed the cloud and were answered locally instead


def test_edge_cli_serves_apps_and_stops_on_sigterm(bundle, digits) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "split.cli", "edge", "--bundle", str(bundle.root), "--listen", "127.0.0.1:0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        _ask_then_stop(process, bundle, digits)


def _ask_then_stop(process: subprocess.Popen[str], bundle, digits) -> None:  # type: ignore[no-untyped-def]
    """Wait for the ready line, ask for three answers, then SIGTERM: the edge must exit cleanly."""
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the ready line, printed once the server is bound and started
        assert line.startswith("edge serving on 127.0.0.1:"), line + (process.stderr.read() if process.stderr else "")
        with grpc.insecure_channel(line.split()[-1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            request = pb.ModelInferRequest(model_name=bundle.manifest.model)
            add_input(request, bundle.manifest.input.name, np.ascontiguousarray(digits.x_test[:3]))
            reply = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert response_outputs(reply)["label"].shape == (3,)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_edge_cli_offloads_over_mutual_tls_with_a_token(bundle, digits, pki, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``edgesplit cloud`` with TLS, client certificates and tokens (a file and the environment); ``edgesplit edge``
    with the matching flags offloads every sample; with a wrong token it answers them all locally, degraded."""
    from cloud.cli import TOKENS_ENV
    from cloud.process import CloudProcess

    n = 4
    np.save(tmp_path / "x.npy", digits.x_test[:n])
    tokens = {name: tmp_path / f"{name}.token" for name in ("server", "edge", "wrong")}
    tokens["server"].write_text("# accepted\nfirst-token-0123456789abcdef\n")
    tokens["edge"].write_text("second-token-0123456789abcdef\n")
    tokens["wrong"].write_text("wrong-token-0123456789abcdef\n")
    monkeypatch.setenv(TOKENS_ENV, "second-token-0123456789abcdef")
    tls = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-client-ca", pki.ca]
    with CloudProcess([bundle.root], [*tls, "--auth-token-file", str(tokens["server"])]) as cloud:
        command = [sys.executable, "-m", "split.cli", "edge", "--bundle", str(bundle.root), "--cloud", cloud.target]
        command += ["--cloud-ca", pki.ca, "--cloud-cert", pki.client_cert, "--cloud-key", pki.client_key]
        command += ["--split", "1", "--no-exits", "--timeout", "10", "--deadline-ms", "5000"]
        command += ["--input", str(tmp_path / "x.npy")]
        rows = {}
        for name in ("edge", "wrong"):
            done = subprocess.run(
                [*command, "--cloud-token-file", str(tokens[name])], capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            rows[name] = [row.split("\t") for row in done.stdout.strip().splitlines()]
    assert len(rows["edge"]) == n and all(row[3] == "cloud" and len(row) == 4 for row in rows["edge"]), rows
    assert len(rows["wrong"]) == n and all(row[3:] == ["edge", "degraded: rejected"] for row in rows["wrong"]), rows


def test_thresholds_can_be_overridden_from_the_command_line(bundle) -> None:  # type: ignore[no-untyped-def]
    from edge.cli import with_thresholds

    name = bundle.manifest.exits[0].name
    changed = with_thresholds(bundle, [f"{name}=0.99"])
    assert changed.manifest.exit(name).threshold == 0.99 and bundle.manifest.exit(name).threshold != 0.99
    assert with_thresholds(bundle, []) is bundle
    with pytest.raises(ValueError, match="valid exits"):
        with_thresholds(bundle, ["nope=0.5"])
    with pytest.raises(ValueError, match="EXIT=VALUE"):
        with_thresholds(bundle, [name])


def test_edge_cli_audits_exited_samples_and_reports_them(bundle, digits, cloud: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n = 40
    np.save(tmp_path / "x.npy", digits.x_test[:n])
    np.save(tmp_path / "y.npy", digits.y_test[:n])
    command = [sys.executable, "-m", "split.cli", "edge", "--bundle", str(bundle.root), "--cloud", cloud]
    command += ["--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]
    command += ["--audit-rate", "1.0", "--audit-max-rps", "1000", "--adaptive-thresholds"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    audit = json.loads(done.stdout)["audit"]
    assert audit["rate"] == 1.0 and audit["adaptive"] is True and audit["selected"] > 0
    assert audit["selected"] == audit["completed"] + sum(audit["dropped"].values())  # every chosen one accounted
    assert set(audit["exits"]) == {e.name for e in bundle.manifest.exits}
    calibrated = {e.name: e.threshold for e in bundle.manifest.exits}
    assert {name: e["calibrated"] for name, e in audit["exits"].items()} == calibrated
