"""The fine-tuned tail: each family's declared blocks cut the traced model where one tensor crosses, the tail from
there answers as the whole model, and a count of blocks outside the valid range is refused with that range."""

from __future__ import annotations

import pytest
import torch

from split.finetune import fine_tuned_tail, recorder
from split.models import build
from split.partition import ModelConfig, build_splitnet
from split.pipeline import Pretrained

SHAPE = (3, 64, 64)


def _net(family: str, exits: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    module = build(family, 3, 10, 1.0, 64)
    points = ("features.3", "features.6") if family == "mobilenet_v2" else ("_blocks.2", "_blocks.4")
    return module, build_splitnet(ModelConfig(family, 1.0, 3, 64, 10, split_points=points, exits=exits), module)


@pytest.mark.parametrize(("family", "blocks"), [("mobilenet_v2", (1, 2, 19)), ("efficientnet_lite0", (1, 2, 17))])
def test_the_tail_from_the_stored_cut_answers_as_the_whole_model(family: str, blocks: tuple[int, ...]) -> None:
    module, net = _net(family)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        expected = module.eval()(x)
        for n in blocks:
            tail = fine_tuned_tail(module, net, SHAPE, n)
            (cut,) = recorder(tail.graph, [tail.cut])(x)
            assert tuple(cut.shape[1:]) == tail.shape and len(tail.blocks) == n
            torch.testing.assert_close(tail.module(cut), expected, rtol=1e-5, atol=1e-5)


def test_a_count_of_blocks_outside_the_valid_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"finetune_blocks is a count of blocks >= 0 \(0: a linear probe\), got -1"):
        Pretrained(finetune_blocks=-1)
    module, net = _net("mobilenet_v2", exits=("features.3", "features.6"))
    with pytest.raises(ValueError, match=r"must be in 0\.\.19 \(ImageNetMobileNetV2 has 19 blocks, features\.0 … "
                                         r"features\.18; 0: a linear probe\), got 20"):  # fmt: skip
        fine_tuned_tail(module, net, SHAPE, 20)
    with pytest.raises(ValueError, match=r"starts at features\.2, before the exit at features\.6; .* in 0\.\.12"):
        fine_tuned_tail(module, net, SHAPE, 17)
    assert fine_tuned_tail(module, net, SHAPE, 12).blocks[0] == "features.7"  # the cut is that exit's tensor
    small = build("mobilenet_v3_small", 3, 10, 1.0, 64)
    with pytest.raises(ValueError, match=r"declares no block_names.*families that do: \['efficientnet_lite0', "
                                         r"'mobilenet_v2'\]"):  # fmt: skip
        fine_tuned_tail(small, build_splitnet(ModelConfig("mobilenet_v3_small", 1.0, 3, 64, 10), small), SHAPE, 1)


def test_only_a_non_zero_count_changes_the_cache_key() -> None:
    probe = Pretrained().key("mobilenet_v2")
    assert len(probe) == 16 and Pretrained(finetune_blocks=0).key("mobilenet_v2") == probe
    assert Pretrained(finetune_blocks=2).key("mobilenet_v2") == f"{probe}-finetune2"


def test_export_takes_finetune_blocks_with_pretrained_only() -> None:
    import argparse

    from split.export_cli import _pretrained, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", "b", "--family", "mobilenet_v2", "--pretrained", "--finetune-blocks", "2"])
    assert _pretrained(args) == Pretrained(None, 2)
    with pytest.raises(ValueError, match="it goes with --pretrained"):
        _pretrained(parser.parse_args(["--out", "b", "--finetune-blocks", "2"]))
