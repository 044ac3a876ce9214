"""Partition a chain of blocks into segments and attach exits: the model as edgesplit sees it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from split.exits import exit_head

__all__ = ["ModelConfig", "SplitNet", "build_splitnet"]


@dataclass(frozen=True)
class ModelConfig:
    """What to build: the family, its size, where segments start and where exits sit.

    ``boundaries`` are block indices where a new segment starts; ``exits`` are segment indices after which an
    exit classifier reads the segment's output.
    """

    family: str = "mobilenetv2"
    width: float = 0.5
    in_channels: int = 1
    image_size: int = 16
    num_classes: int = 10
    boundaries: tuple[int, ...] = (2, 4, 7)
    exits: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if list(self.boundaries) != sorted(set(self.boundaries)) or not self.boundaries or self.boundaries[0] < 1:
            raise ValueError(f"boundaries must be increasing block indices >= 1, got {self.boundaries}")
        n_segments = len(self.boundaries) + 1
        bad = [e for e in self.exits if not 0 <= e < n_segments - 1]
        if bad:
            raise ValueError(f"exits {bad} invalid: an exit sits after one of segments 0..{n_segments - 2}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width multiplier must be in (0, 4], got {self.width}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one input sample (C, H, W)."""
        return (self.in_channels, self.image_size, self.image_size)


class SplitNet(nn.Module):
    """Segments in a chain plus exit heads reading some segment outputs."""

    def __init__(self, segments: Sequence[nn.Module], exits: dict[int, nn.Module]) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.exit_positions = sorted(exits)
        self.exits = nn.ModuleList(exits[i] for i in self.exit_positions)

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


def build_splitnet(config: ModelConfig, blocks: nn.Sequential) -> SplitNet:
    """Cut ``blocks`` at ``config.boundaries`` and attach exit heads after ``config.exits``."""
    if config.boundaries[-1] >= len(blocks):
        raise ValueError(f"boundary {config.boundaries[-1]} is past the last block (the model has {len(blocks)})")
    cuts = [0, *config.boundaries, len(blocks)]
    segments = [nn.Sequential(*list(blocks)[a:b]) for a, b in itertools.pairwise(cuts)]
    shapes = SplitNet(segments, {}).eval().boundary_shapes(config.input_shape)
    heads: dict[int, nn.Module] = {}
    for i in config.exits:
        channels, spatial = shapes[i + 1][0], shapes[i + 1][-1]
        heads[i] = exit_head(channels, spatial, config.num_classes)
    return SplitNet(segments, heads)
