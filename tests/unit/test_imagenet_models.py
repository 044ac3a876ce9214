"""The ImageNet-style families: split discovery at 224 pixels, other input sizes, preprocessing descriptions."""

from __future__ import annotations

import pytest
import torch

from split.graph import boundaries, resolve, trace
from split.models import FAMILIES, IMAGENET_FAMILIES, build
from split.models.efficientnet import same_padding

SHAPE = (3, 224, 224)
# Per family: the valid boundaries at 224 pixels and the shapes at the default split points.
EXPECTED = {
    "efficientnet_lite0": (76, [(24, 56, 56), (40, 28, 28), (112, 14, 14), (320, 7, 7)]),
    "mobilenet_v1": (84, [(128, 56, 56), (256, 28, 28), (512, 14, 14)]),
    "mobilenet_v2": (72, [(24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7)]),
    "mobilenet_v3_large": (64, [(24, 56, 56), (40, 28, 28), (112, 14, 14), (160, 7, 7)]),
    "mobilenet_v3_small": (58, [(16, 56, 56), (24, 28, 28), (48, 14, 14), (96, 7, 7)]),
    "shufflenet_v2": (73, [(24, 56, 56), (116, 28, 28), (232, 14, 14), (464, 7, 7)]),
}


@pytest.fixture(scope="module", params=sorted(IMAGENET_FAMILIES))
def traced(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    model = build(request.param, 3, 1000, 1.0, 224).eval()
    return request.param, model, trace(model, SHAPE)


def test_the_default_split_points_resolve_at_224(traced) -> None:  # type: ignore[no-untyped-def]
    family, model, gm = traced
    points = boundaries(gm)
    count, shapes = EXPECTED[family]
    assert len(points) == count
    cuts = resolve(points, model.split_points, gm)
    assert [c.shape for c in cuts] == shapes
    assert set(model.exits) <= set(model.split_points) and model.exits == model.split_points[: len(model.exits)]


def test_every_family_names_its_preprocessing(traced) -> None:  # type: ignore[no-untyped-def]
    family, model, _ = traced
    pre = model.preprocessing
    assert set(pre) == {"resize", "crop", "mean", "std", "scale"}
    assert (pre["resize"], pre["crop"], pre["scale"]) == (256, 224, 1 / 255)
    if family == "efficientnet_lite0":  # (x - 127) / 128 on 0..255 values
        assert pre["mean"] == [127 / 255] * 3 and pre["std"] == [128 / 255] * 3
    else:
        assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    others = [f.preprocessing for name, f in IMAGENET_FAMILIES.items() if name != family]
    assert all(pre is not other for other in others)  # each family its own dict: a caller may change it


@pytest.mark.parametrize("family", sorted(IMAGENET_FAMILIES))
@pytest.mark.parametrize(
    "size", [129]
)  # odd: EfficientNet pads symmetrically at some stride-2 layers (28 px: test_graph)
def test_families_work_at_other_sizes_and_widths(family: str, size: int) -> None:
    model = build(family, 3, 10, 0.5, size).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 10)


def test_the_imagenet_families_are_families() -> None:
    assert set(IMAGENET_FAMILIES) <= set(FAMILIES)
    with pytest.raises(ValueError, match=r"known families: .*mobilenet_v3_small.*shufflenet_v2"):
        build("mobilenet_v4", 3, 10, 1.0, 224)


def test_tensorflow_same_padding_puts_the_extra_pixel_after() -> None:
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(28, 5, 1) == (2, 2)
    assert same_padding(225, 3, 2) == (1, 1)


def test_shufflenet_split_discovery_around_the_channel_split_and_shuffle() -> None:
    """Unit ends and the shuffle's steps are valid; inside a unit two tensors cross; the chunk is a tuple."""
    gm = trace(build("shufflenet_v2", 3, 1000, 1.0, 224).eval(), SHAPE)
    points = boundaries(gm)
    names = {alias for b in points for alias in b.aliases}
    assert {"stage2.0", "stage2.3", "stage2", "stage3.7", "stage4", "conv5"} <= names
    assert {"cat", "unflatten", "transpose"} <= names
    assert next(b for b in points if b.name == "unflatten").shape == (2, 58, 28, 28)
    for inside in ("stage2.1.branch2.0", "stage2.1.branch2", "stage2.0.branch1"):
        with pytest.raises(ValueError, match="2 tensors cross"):
            resolve(points, [inside], gm)
    with pytest.raises(ValueError, match=r"chunk_\d+, is not a single tensor"):
        resolve(points, ["chunk"], gm)
