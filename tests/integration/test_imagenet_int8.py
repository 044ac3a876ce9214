"""Every ImageNet family through the export path with an int8 edge: QDQ segments and exits (squeeze-excitation,
hard-swish, ShuffleNet's split, concat and shuffle), chained on uint8, fp32 tails that match PyTorch.

One bundle per family, cut at one split point (with an exit) to keep the export short: the untrained families at
96 pixels on random inputs (batch 2), EfficientNet-Lite0 with its ImageNet weights at 224 on the photos, where the
int8 edge must also give float32's top-1. (MobileNetV2's bundle at every split point: test_imagenet_pretrained.)
MobileNetV1 and MobileNetV3-Large are left out here: their int8 edges and tails have no op (nor kind of
convolution: depthwise or not, kernel, stride) that MobileNetV3-Small's, ShuffleNetV2's and EfficientNet-Lite0's
lack; their float32 graphs are tested with every family's (tests/unit/test_imagenet_models.py).

Tolerances for the fp32 tails: RTOL = 1e-3 and ATOL = 1e-3 of the logits' largest magnitude (untrained networks
have logits of ~0.03, the pretrained ones up to ~30).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from protos.codecs import dequantize
from split.export import export_bundle
from split.models import IMAGENET_FAMILIES, build
from split.partition import ModelConfig, build_splitnet
from split.photos import imagenet_photos, preprocess_photos
from split.pretrained import load_pretrained
from split.quantize import edge_outputs

RTOL = 1e-3
SAME_OPS = {"mobilenet_v1", "mobilenet_v3_large"}  # as the families tested here: see the module docstring
UNTRAINED = sorted(set(IMAGENET_FAMILIES) - {"mobilenet_v2", "efficientnet_lite0"} - SAME_OPS)


def _inputs(family: str) -> tuple[torch.nn.Module, ModelConfig, np.ndarray, np.ndarray]:
    """(model, config, calibration inputs, test inputs)."""
    if family == "efficientnet_lite0":
        model = load_pretrained(family)
        x = preprocess_photos([p for p, _ in imagenet_photos()], model.preprocessing)
        return model, ModelConfig(family, 1.0, 3, 224, 1000), x[:10], x[10:]
    torch.manual_seed(0)
    model = build(family, 3, 10, 1.0, 96).eval()
    rng = np.random.default_rng(0)
    return (
        model,
        ModelConfig(family, 1.0, 3, 96, 10),
        *(rng.standard_normal((n, 3, 96, 96), np.float32) for n in (8, 2)),
    )


@pytest.fixture(scope="module", params=[*UNTRAINED, "efficientnet_lite0"])
def int8(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    family = request.param
    model, config, calibration, x = _inputs(family)
    point = model.split_points[-2]
    config = ModelConfig(family, 1.0, 3, config.image_size, config.num_classes, split_points=(point,), exits=(point,))
    net = build_splitnet(config, model).eval()
    root = tmp_path_factory.mktemp("int8") / family
    classes = tuple(str(i) for i in range(config.num_classes))
    manifest = export_bundle(
        net, config, root, model_name=family, classes=classes, default_split=1,
        edge_precision="int8", calibration_inputs=calibration,
    )  # fmt: skip
    with torch.no_grad():
        boundary = net.segments[0](torch.from_numpy(x))
        reference = net.segments[1](boundary).numpy()
    return family, root, manifest, x, boundary.numpy(), reference


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_the_edge_is_int8_and_chained_on_uint8(int8) -> None:  # type: ignore[no-untyped-def]
    _, root, manifest, *_ = int8
    assert manifest.edge_precision == "int8"
    assert manifest.segments[0].output.datatype == "UINT8" == manifest.segments[1].input.datatype
    for rel in [s.file for s in manifest.segments] + [e.file for e in manifest.exits]:
        graph = onnx.load(str(root / rel)).graph
        assert any(w.data_type == onnx.TensorProto.INT8 for w in graph.initializer), rel


def test_the_fp32_tails_match_pytorch(int8) -> None:  # type: ignore[no-untyped-def]
    _, root, manifest, x, boundary, reference = int8
    atol = RTOL * float(np.abs(reference).max())
    for k, start in ((0, x), (1, boundary)):
        logits = _run(root / manifest.split_point(k).tail, start)
        assert logits.shape == reference.shape and logits.dtype == np.float32
        np.testing.assert_allclose(logits, reference, rtol=RTOL, atol=atol, err_msg=f"tail {k}")


def test_the_int8_edge_runs_and_hands_the_tail_its_uint8_tensor(int8) -> None:  # type: ignore[no-untyped-def]
    family, root, manifest, x, _, reference = int8
    bounds, exits = edge_outputs(root, manifest, x)
    assert bounds[1].dtype == np.uint8 and bounds[2].shape == reference.shape
    assert np.isfinite(bounds[2]).all() and all(np.isfinite(v).all() for v in exits.values())
    cloud = _run(root / manifest.split_point(1).tail, dequantize(bounds[1], manifest.segments[1].input))
    assert np.isfinite(cloud).all()
    if family == "efficientnet_lite0":  # trained: the int8 edge gives float32's answers on unseen photos
        top1 = reference.argmax(-1)
        assert (bounds[2].argmax(-1) == top1).sum() >= 8 and (cloud.argmax(-1) == top1).sum() >= 8
