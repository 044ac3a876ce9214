"""An int8 edge: QDQ segments and exits calibrated on the calibration split, fp32 tails, recalibrated thresholds,
and an edge runtime that runs it unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from split.pipeline import BundleConfig, make_bundle
from split.quantize import edge_outputs
from split.train import TrainConfig


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def int8(trained, digits, tmp_path_factory):  # type: ignore[no-untyped-def]
    _, _, model = trained
    out = tmp_path_factory.mktemp("int8")
    bundle, net = make_bundle(
        digits,
        model,
        TrainConfig(epochs=4),
        BundleConfig(default_split=2, edge_precision="int8"),
        cache=tmp_path_factory.mktemp("cache-int8"),
        out=out,
        progress=False,
    )
    return bundle, net


def test_edge_graphs_are_int8_and_tails_fp32(int8) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    loaded = Bundle.load(bundle.root)  # the content hash covers the quantized files
    m = loaded.manifest
    assert m.edge_precision == "int8"
    for rel in [s.file for s in m.segments] + [e.file for e in m.exits]:
        assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(loaded.file(rel)), rel
        weights = onnx.load(str(loaded.file(rel))).graph.initializer
        assert any(w.data_type == onnx.TensorProto.INT8 for w in weights), rel
    for sp in m.split_points:  # the int8 wire formats' tails dequantize their input; their weights stay fp32
        for rel in sp.tails.values():
            assert not any(
                w.data_type == onnx.TensorProto.INT8 for w in onnx.load(str(loaded.file(rel))).graph.initializer
            ), rel


def test_thresholds_are_calibrated_on_the_int8_exits(int8, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, _ = int8
    m = bundle.manifest
    _, logits = edge_outputs(bundle.root, m, digits.x_cal)
    first = m.exits[0]
    stats = dict(first.calibration)
    probs = np.exp(logits[first.name] - logits[first.name].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    exited = int((probs.max(-1) >= first.threshold).sum())
    assert stats["exited"] == exited  # the count the int8 exit really takes at its threshold


def test_int8_edge_answers_like_the_fp32_model(int8, digits) -> None:  # type: ignore[no-untyped-def]
    bundle, net = int8
    n = len(bundle.manifest.segments)
    runtime = EdgeRuntime(bundle, split=n, exits=False)  # the whole model on the (int8) edge
    labels = np.array([runtime.infer(digits.x_test[i : i + 1]).label for i in range(len(digits.x_test))])
    import torch

    with torch.no_grad():
        reference = net(torch.from_numpy(digits.x_test)).argmax(-1).numpy()
    agreement = (labels == reference).mean()
    assert agreement > 0.95, agreement
    assert (labels == digits.y_test).mean() > (reference == digits.y_test).mean() - 0.03
