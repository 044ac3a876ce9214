"""Pretrained ImageNet networks on real photos: PyTorch top-1 on foolbox's 20 ImageNet samples, then MobileNetV2's
bundle (ONNX segments, exits and fused tails at every split point) against PyTorch, and its int8 edge.

Tolerances: fp32 graphs with batch norm folded into the convolutions by the exporter; boundaries and logits
(magnitudes up to ~30) agree within RTOL = ATOL = 1e-3 (the largest deviation measured was ~2e-4).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from protos.bundle import Bundle, write_manifest
from protos.codecs import dequantize
from split.export import export_bundle
from split.partition import ModelConfig, build_splitnet
from split.photos import imagenet_photos, preprocess_photos
from split.pretrained import load_pretrained
from split.quantize import edge_outputs, quantize_edge

RTOL, ATOL = 1e-3, 1e-3
MIN_TOP1 = 14  # of 20: the published top-1 of both nets is ~72-75% on ImageNet's validation set


@pytest.fixture(scope="module")
def photos() -> tuple[list[Path], np.ndarray]:
    listed = imagenet_photos()
    return [p for p, _ in listed], np.array([label for _, label in listed])


def _counts(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(-1).sum())


@pytest.mark.parametrize("family", ["mobilenet_v2", "efficientnet_lite0"])
def test_torch_top1_on_the_photos_is_plausible(family: str, photos) -> None:  # type: ignore[no-untyped-def]
    paths, labels = photos
    model = load_pretrained(family)
    x = torch.from_numpy(preprocess_photos(paths, model.preprocessing))
    with torch.no_grad():
        logits = model(x).numpy()
    top1, top5 = _counts(logits, labels)
    assert top1 >= MIN_TOP1 and top5 >= top1, (family, top1, top5)


@pytest.fixture(scope="module")
def mobilenet(photos, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(net, config, fp32 bundle, inputs of the 20 photos, PyTorch boundaries and exit logits)."""
    model = load_pretrained("mobilenet_v2")
    config = ModelConfig("mobilenet_v2", width=1.0, in_channels=3, image_size=224, num_classes=1000)
    torch.manual_seed(0)  # the exit heads are untrained; parity only
    net = build_splitnet(config, model).eval()
    out = tmp_path_factory.mktemp("imagenet") / "mobilenet_v2"
    classes = tuple(str(i) for i in range(1000))
    manifest = export_bundle(
        net, config, out, model_name="mobilenet_v2", classes=classes, default_split=1, preprocessing=model.preprocessing
    )
    x = preprocess_photos(photos[0], model.preprocessing)
    with torch.no_grad():
        bounds = [torch.from_numpy(x)]
        for segment in net.segments:
            bounds.append(segment(bounds[-1]))
        exits = net.forward_all(bounds[0])[1]
    return net, config, Bundle.load(out), manifest, x, [b.numpy() for b in bounds], [e.numpy() for e in exits]


def _run(root: Path, rel: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(root / rel), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_the_bundle_cuts_at_the_default_split_points(mobilenet) -> None:  # type: ignore[no-untyped-def]
    net, _, bundle, *_ = mobilenet
    assert net.boundary_names == ["features.3", "features.6", "features.13", "features.17"]
    shapes = [s.output.shape for s in bundle.manifest.segments]
    assert shapes == [(-1, 24, 56, 56), (-1, 32, 28, 28), (-1, 96, 14, 14), (-1, 320, 7, 7), (-1, 1000)]
    assert bundle.manifest.preprocessing["crop"] == 224


def test_segments_and_exits_match_pytorch(mobilenet) -> None:  # type: ignore[no-untyped-def]
    _, _, bundle, _, _, bounds, exits = mobilenet
    for seg in bundle.manifest.segments:
        out = _run(bundle.root, seg.file, bounds[seg.index])
        assert out.shape == bounds[seg.index + 1].shape and out.dtype == np.float32
        np.testing.assert_allclose(out, bounds[seg.index + 1], rtol=RTOL, atol=ATOL, err_msg=seg.file)
    assert len(bundle.manifest.exits) == len(exits) == 2
    for spec, expected in zip(bundle.manifest.exits, exits, strict=True):
        out = _run(bundle.root, spec.file, bounds[spec.after_segment + 1])
        np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL, err_msg=spec.file)


def test_every_split_point_gives_the_models_answers_on_the_photos(mobilenet, photos) -> None:  # type: ignore[no-untyped-def]
    """Edge segments [0, k) then the fused tail k, on the 20 photos: PyTorch's logits and top-1 for every k."""
    _, _, bundle, _, x, bounds, _ = mobilenet
    full, labels = bounds[-1], photos[1]
    offloading = [sp for sp in bundle.manifest.split_points if sp.tail]
    assert [sp.index for sp in offloading] == [0, 1, 2, 3, 4]
    for sp in offloading:
        y = x
        for seg in bundle.manifest.segments[: sp.index]:
            y = _run(bundle.root, seg.file, y)
        logits = _run(bundle.root, sp.tail, y)
        np.testing.assert_allclose(logits, full, rtol=RTOL, atol=ATOL, err_msg=f"split point {sp.index}")
        np.testing.assert_array_equal(logits.argmax(-1), full.argmax(-1), err_msg=f"split point {sp.index}")
        assert _counts(logits, labels) == _counts(full, labels)


def test_the_int8_edge_answers_like_fp32_on_photos_it_was_not_calibrated_on(mobilenet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The int8 edge (QDQ segments and exits, calibrated on 10 photos, chained on uint8) on the other 10: the
    same top-1 as float32 for most, with the whole model on the edge and at an inner split point."""
    _, _, bundle, manifest, x, bounds, _ = mobilenet
    root = tmp_path / "int8"
    shutil.copytree(bundle.root, root)  # what export_bundle(edge_precision="int8") does after its fp32 export
    int8 = write_manifest(root, quantize_edge(root, manifest, x[:10]))
    assert int8.edge_precision == "int8" and int8.segments[1].input.datatype == "UINT8"
    edge, exits = edge_outputs(root, int8, x[10:])
    reference = bounds[-1][10:].argmax(-1)
    assert (edge[-1].argmax(-1) == reference).sum() >= 8
    assert all(np.isfinite(logits).all() for logits in exits.values())
    split = 2  # the cloud's fp32 tail on the int8 edge's uint8 tensor
    logits = _run(root, int8.split_point(split).tail, dequantize(edge[split], int8.segments[split].input))
    assert (logits.argmax(-1) == reference).sum() >= 8
