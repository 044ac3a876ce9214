"""Channel pruning of the edge segments: what is found, exact slicing, smaller graphs, fine-tuning."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import fx, nn

from split.export import export_onnx
from split.prune import PruneConfig, chains, prune_and_finetune, prune_segments
from split.train import TrainConfig, predict


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_prune_config_is_validated() -> None:
    for kwargs in ({"ratio": 0.0}, {"ratio": 1.0}, {"epochs": -1}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            PruneConfig(**kwargs)


def test_only_the_edge_segments_shrink(trained) -> None:  # type: ignore[no-untyped-def]
    _, net, _ = trained
    before = copy.deepcopy(net.state_dict())
    prunable = [i for i, seg in enumerate(net.segments) if chains(seg)]
    assert 1 in prunable  # MobileNetV2's expansions
    pruned = prune_segments(net, 2, 0.5)
    for i, (old, new) in enumerate(zip(net.segments, pruned.segments, strict=True)):
        if i < 2 and i in prunable:
            assert _params(new) < 0.75 * _params(old), i
        else:
            assert _params(new) == _params(old), i
    assert _params(pruned.exits) == _params(net.exits)
    for key, value in net.state_dict().items():  # the original is untouched
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    x = torch.zeros(3, *net.boundary_shapes((1, 16, 16))[0])
    assert pruned.boundary_shapes((1, 16, 16)) == net.boundary_shapes((1, 16, 16))
    assert pruned(x).shape == net(x).shape


def test_slicing_is_exact_when_the_removed_channels_are_unused(trained, digits) -> None:  # type: ignore[no-untyped-def]
    """Zero the consumers' weights on the channels pruning will remove: the pruned net computes the same."""
    _, net, _ = trained
    silenced = copy.deepcopy(net)
    for segment in list(silenced.segments)[:2]:
        assert isinstance(segment, fx.GraphModule)
        for chain in chains(segment):
            conv = segment.get_submodule(chain.conv)
            keep = conv.weight.abs().sum(dim=(1, 2, 3)).topk(round(conv.out_channels * 0.5)).indices
            removed = sorted(set(range(conv.out_channels)) - set(keep.tolist()))
            with torch.no_grad():
                for target in chain.consumers:
                    segment.get_submodule(target).weight[:, removed] = 0
    pruned = prune_segments(silenced, 2, 0.5)
    final_a, exits_a = predict(silenced, digits.x_test[:200])
    final_b, exits_b = predict(pruned, digits.x_test[:200])
    np.testing.assert_allclose(final_b, final_a, rtol=1e-4, atol=1e-4)
    for a, b in zip(exits_a, exits_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_exported_graph_is_smaller_and_fine_tuning_recovers(trained, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, net, model = trained
    shape = net.boundary_shapes(model.input_shape)[1]
    pruned = prune_and_finetune(net, 2, digits, PruneConfig(0.5, epochs=2, lr=2e-3), TrainConfig(batch_size=64))
    export_onnx(net.segments[1], shape, tmp_path / "full.onnx", "x", "y")
    export_onnx(pruned.segments[1], shape, tmp_path / "pruned.onnx", "x", "y")
    weights = {name: sum(np.prod(w.dims) for w in onnx.load(str(tmp_path / f"{name}.onnx")).graph.initializer)
               for name in ("full", "pruned")}  # fmt: skip
    assert weights["pruned"] < 0.75 * weights["full"], weights
    assert (tmp_path / "pruned.onnx").stat().st_size < (tmp_path / "full.onnx").stat().st_size
    full = (predict(net, digits.x_test)[0].argmax(-1) == digits.y_test).mean()
    after = (predict(pruned, digits.x_test)[0].argmax(-1) == digits.y_test).mean()
    assert after > full - 0.1, (full, after)
