"""Split points come from the traced graph: every boundary exactly one tensor crosses, on all three families."""

from __future__ import annotations

import pytest
import torch

from split.graph import boundaries, resolve, segment_modules, trace
from split.models import FAMILIES, build
from split.partition import ModelConfig, build_splitnet

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def traced(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build(request.param, 1, 10, 0.25, 28).eval()
    return request.param, model, trace(model, SHAPE)


def test_each_familys_named_split_points_are_found(traced) -> None:  # type: ignore[no-untyped-def]
    _, model, gm = traced
    names = {alias for b in boundaries(gm) for alias in b.aliases}
    assert set(model.split_points) <= names
    assert len(boundaries(gm)) >= len(model.split_points)


def test_every_boundary_is_crossed_by_exactly_one_tensor_and_segments_rebuild_the_model(traced) -> None:  # type: ignore[no-untyped-def]
    _, model, gm = traced
    points = boundaries(gm)
    segments = segment_modules(gm, points)  # cut at every valid point at once
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        expected, y = model(x), x
        for segment in segments:
            y = segment(y)
    assert len(segments) == len(points) + 1
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("family", "inside", "crossing"),
    [
        ("resnet", "layer2.0.conv1", 2),  # inside a residual block: the skip connection crosses too
        ("squeezenet", "fire3.expand1", 2),  # between the expand branches: the squeeze output crosses too
        ("mobilenetv2", "blocks.4.body.0", 2),  # inside an inverted residual with a skip
    ],
)
def test_a_boundary_several_tensors_cross_is_refused_with_the_valid_ones_listed(
    family: str, inside: str, crossing: int
) -> None:
    model = build(family, 1, 10, 0.25, 28)
    gm = trace(model, SHAPE)
    points = boundaries(gm)
    with pytest.raises(ValueError, match=f"{crossing} tensors cross") as info:
        resolve(points, [inside], gm)
    message = str(info.value)
    assert "valid split points" in message and points[0].name in message


def test_an_unknown_name_is_refused() -> None:
    gm = trace(build("resnet", 1, 10, 0.25, 28), SHAPE)
    with pytest.raises(ValueError, match="no module or node has that name"):
        resolve(boundaries(gm), ["layer9"], gm)


def test_split_points_must_be_in_execution_order() -> None:
    config = ModelConfig("resnet", width=0.25, image_size=28, split_points=("layer2", "layer1"), exits=())
    with pytest.raises(ValueError, match="execution order"):
        build_splitnet(config, build("resnet", 1, 10, 0.25, 28))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_splitnet_at_any_chosen_points_equals_the_model(family: str) -> None:
    torch.manual_seed(0)
    model = build(family, 1, 10, 0.25, 28).eval()
    points = [b.name for b in boundaries(trace(model, SHAPE))]
    chosen = (points[1], points[len(points) // 2], points[-2])
    net = build_splitnet(ModelConfig(family, width=0.25, image_size=28, split_points=chosen, exits=chosen[:1]), model)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        final, exits = net.eval().forward_all(x)
        torch.testing.assert_close(final, model(x), rtol=1e-5, atol=1e-5)
    assert net.boundary_names == list(chosen) and len(exits) == 1
