"""Partition a model into segments at split points found in its traced graph, and attach exits.

Example:
    >>> config = ModelConfig("resnet", image_size=28)
    >>> net = build_splitnet(config, build("resnet", 1, 10, 1.0, 28))    # doctest: +SKIP
    >>> [len(net.segments), net.boundary_names]                          # doctest: +SKIP
    [4, ['layer1', 'layer2', 'layer3']]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from split.exits import exit_head
from split.graph import boundaries, resolve, segment_modules, trace

__all__ = ["ModelConfig", "SplitNet", "build_splitnet"]


@dataclass(frozen=True)
class ModelConfig:
    """What to build: the family, its size, the split points that cut it into segments and where exits sit.

    ``split_points`` and ``exits`` name boundaries of the traced graph (see :mod:`split.graph`); ``None`` takes the
    family's defaults. Every exit must sit at one of the split points.
    """

    family: str = "mobilenetv2"
    width: float = 0.5
    in_channels: int = 1
    image_size: int = 16
    num_classes: int = 10
    split_points: tuple[str, ...] | None = None
    exits: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.width <= 4:
            raise ValueError(f"width multiplier must be in (0, 4], got {self.width}")
        if self.split_points is not None and self.exits is not None:
            stray = [e for e in self.exits if e not in self.split_points]
            if stray:
                raise ValueError(f"exits {stray} are not split points; exits sit at one of {list(self.split_points)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one input sample (C, H, W)."""
        return (self.in_channels, self.image_size, self.image_size)


class SplitNet(nn.Module):
    """Segments in a chain plus exit heads reading some segment outputs."""

    def __init__(
        self, segments: Sequence[nn.Module], exits: dict[int, nn.Module], boundary_names: Sequence[str]
    ) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.exit_positions = sorted(exits)
        self.exits = nn.ModuleList(exits[i] for i in self.exit_positions)
        self.boundary_names = list(boundary_names)

    def forward(self, x: Tensor) -> Tensor:
        """The full model's logits."""
        for segment in self.segments:
            x = segment(x)
        return x

    def forward_all(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The final logits and every exit's logits (in exit order), from one pass."""
        heads = dict(zip(self.exit_positions, self.exits, strict=True))
        outs: list[Tensor] = []
        for i, segment in enumerate(self.segments):
            x = segment(x)
            if i in heads:
                outs.append(heads[i](x))
        return x, outs

    def boundary_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Per-sample shapes at every boundary: the input, then each segment's output."""
        shapes = [tuple(input_shape)]
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            for segment in self.segments:
                x = segment(x)
                shapes.append(tuple(x.shape[1:]))
        return shapes


def build_splitnet(config: ModelConfig, model: nn.Module) -> SplitNet:
    """Trace ``model``, cut it at ``config.split_points`` (or the family's) and attach exit heads."""
    wanted = config.split_points or tuple(getattr(model, "split_points", ()))
    exits = config.exits if config.exits is not None else tuple(getattr(model, "exits", ()))
    gm = trace(model, config.input_shape)
    points = boundaries(gm)
    if not wanted:
        raise ValueError(
            f"no split points given and the model names none; valid split points: {[b.name for b in points]}"
        )
    cuts = resolve(points, wanted, gm)
    names = [c.name for c in cuts]
    by_alias = {alias: i for i, c in enumerate(cuts) for alias in c.aliases}
    stray = [e for e in exits if e not in by_alias]
    if stray:
        raise ValueError(f"exits {stray} are not among the split points {names}")
    heads: dict[int, nn.Module] = {}
    for e in exits:
        i = by_alias[e]
        channels, spatial = cuts[i].shape[0], cuts[i].shape[-1]
        heads[i] = exit_head(channels, spatial, config.num_classes)
    return SplitNet(segment_modules(gm, cuts), heads, names)
