"""``bench edge``'s measurements on the digits bundle: the hybrid matches the PyTorch cascade, the int8 copy is a
valid int8 bundle, the distillation comparison reports both kinds."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.edge import distillation, edge_latency_ms, hybrid, int8_bundle, latencies, wire_encode_us
from edge.policy import criterion, softmax
from protos.bundle import Bundle
from split.calibrate import cascade
from split.pipeline import BundleConfig
from split.train import ExitLoss, TrainConfig, predict


def test_hybrid_matches_the_torch_cascade(trained, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, net, _ = trained
    used = bundle.manifest.exits_before(2)
    measured = hybrid(bundle, 2, digits.x_test, digits.y_test, batch=100)
    final, exits = predict(net, digits.x_test)
    crits = [criterion(e.criterion) for e in used]
    preds, taken = cascade(softmax(final), [softmax(exits[k]) for k in range(len(used))], crits,
                           [e.threshold for e in used])  # fmt: skip
    assert len(used) == 2
    assert abs(measured["edge_exit_rate"] - (taken < len(used)).mean()) <= 0.01
    assert abs(measured["hybrid_accuracy"] - (preds == digits.y_test).mean()) <= 0.01
    assert 0 < measured["edge_exit_rate"] < 1


def test_int8_copy_and_its_latency(trained, digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, net, _ = trained
    copy = int8_bundle(bundle, tmp_path / "int8", net, digits, BundleConfig(default_split=2))
    assert Bundle.load(copy.root).manifest.edge_precision == "int8"
    assert Bundle.load(bundle.root).manifest.edge_precision == "fp32"  # the original is untouched
    latency = edge_latency_ms(copy, 2, digits.x_test[:1], repeats=3)
    assert math.isfinite(latency) and latency > 0
    timed = latencies({"fp32": bundle, "int8": copy}, 2, digits, repeats=3, batch=16)  # side by side
    assert set(timed) == {"fp32", "int8"}
    for t in timed.values():
        assert t["batch"] == 16 and all(math.isfinite(t[k]) and t[k] > 0 for k in t if k.startswith("latency"))
    assert set(wire_encode_us(copy, 2, digits.x_test[:1], repeats=3)) == {"encode_us", "requantize_us"}
    assert set(wire_encode_us(bundle, 2, digits.x_test[:1], repeats=3)) == {"encode_us"}  # fp32: nothing to hand
    measured = hybrid(copy, 2, digits.x_test, digits.y_test)
    assert measured["hybrid_accuracy"] > 0.8


def test_distillation_reports_ce_and_kd(trained, digits) -> None:  # type: ignore[no-untyped-def]
    _, net, _ = trained
    before = [p.detach().clone() for p in net.exits.parameters()]
    kds = [ExitLoss("kd", 3.0), ExitLoss("kd", 1.5, 0.5)]
    result = distillation(net, digits, 2, BundleConfig(default_split=2), TrainConfig(epochs=1), kds, 300, n_val=200)
    for kind in ("ce", "kd"):
        assert 0 <= result[f"{kind}_exit_rate"] <= 1
        assert 0.5 < result[f"{kind}_hybrid_accuracy"] <= 1
    # the kd setting is the one with the most exits on the held-out training samples, not on test
    rates = [c["val_exit_rate"] for c in result["candidates"]]
    chosen = result["candidates"][rates.index(max(rates))]
    assert (result["temperature"], result["alpha"]) == (chosen["temperature"], chosen["alpha"])
    assert result["kd_val_exit_rate"] == max(rates)  # the same seed retrains the same exits
    assert result["validation_samples"] == 200
    assert result["kd_minus_ce_points"] == 100 * (result["kd_exit_rate"] - result["ce_exit_rate"])
    for p, q in zip(before, net.exits.parameters(), strict=True):  # the benchmark works on copies
        np.testing.assert_array_equal(p.numpy(), q.detach().numpy())
