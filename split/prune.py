"""Structured (channel) pruning of a :class:`SplitNet`'s edge segments by filter magnitude.

Inside a segment's traced graph, a convolution's output channels can be removed when every use of them stays in
the segment and is channel-wise: ``conv (groups=1) -> [BatchNorm] -> [ReLU/ReLU6/pooling/dropout]* -> consumers``,
where each consumer is a convolution with ``groups=1`` (its input channels are removed too), or a depthwise
convolution whose own chain ends the same way (its channels go with them: MobileNetV2's expansion). Residual
adds and concatenations are never crossed, so every boundary tensor, exit and tail keeps its shape. Each prunable
convolution keeps the ``1 - ratio`` of its filters with the largest L1 norm; the modules are replaced by smaller
ones, so the exported graph really is smaller. Fine-tune afterwards (:func:`prune_and_finetune`).

Example:
    >>> pruned = prune_segments(net, split=2, ratio=0.5)                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from split.data import Dataset
from split.partition import SplitNet
from split.train import TrainConfig, train_joint

__all__ = ["Chain", "PruneConfig", "chains", "prune_and_finetune", "prune_segments"]

_PASS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class PruneConfig:
    """``ratio``: the fraction of each prunable convolution's filters removed; ``epochs``, ``lr``: fine-tuning."""

    ratio: float = 0.5
    epochs: int = 1
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio is the fraction of channels removed, in (0, 1), got {self.ratio}")
        if self.epochs < 0 or self.lr <= 0:
            raise ValueError(f"epochs must be >= 0 and lr positive, got {self.epochs}, {self.lr}")


@dataclass(frozen=True)
class Chain:
    """A prunable convolution (module targets): its batch norm, a depthwise convolution and its batch norm in
    between (MobileNetV2), and the convolutions that read the channels."""

    conv: str
    norms: tuple[str, ...]
    depthwise: str | None
    consumers: tuple[str, ...]


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _follow(gm: fx.GraphModule, node: fx.Node) -> tuple[list[str], list[fx.Node]] | None:
    """From ``node`` through channel-wise modules: (the batch norms passed, the convolutions at the end)."""
    norms: list[str] = []
    while len(node.users) == 1:
        (user,) = node.users
        module = _module(gm, user)
        if isinstance(module, nn.BatchNorm2d):
            norms.append(str(user.target))
        elif not isinstance(module, _PASS):
            break
        node = user
    ends = list(node.users)
    if not ends or not all(isinstance(_module(gm, u), nn.Conv2d) for u in ends):
        return None
    return norms, ends


def _chain(gm: fx.GraphModule, node: fx.Node) -> Chain | None:
    conv = _module(gm, node)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.out_channels < 2:
        return None
    found = _follow(gm, node)
    if found is None:
        return None
    norms, ends = found
    first = _module(gm, ends[0])
    assert isinstance(first, nn.Conv2d)
    if len(ends) == 1 and first.groups == first.in_channels == first.out_channels > 1:  # depthwise: go through
        after = _follow(gm, ends[0])
        if after is None or any(_module(gm, u).groups != 1 for u in after[1]):  # type: ignore[union-attr]
            return None
        return Chain(str(node.target), (*norms, *after[0]), str(ends[0].target), tuple(str(u.target) for u in after[1]))
    if any(_module(gm, u).groups != 1 for u in ends):  # type: ignore[union-attr]
        return None
    return Chain(str(node.target), tuple(norms), None, tuple(str(u.target) for u in ends))


def chains(segment: fx.GraphModule) -> list[Chain]:
    """The prunable convolutions of ``segment``, in graph order (a module called more than once is left alone)."""
    calls = [str(n.target) for n in segment.graph.nodes if n.op == "call_module"]
    found = [c for n in segment.graph.nodes if (c := _chain(segment, n)) is not None]
    return [
        c for c in found if all(calls.count(t) == 1 for t in (c.conv, *c.norms, c.depthwise or c.conv, *c.consumers))
    ]


def _replace(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _conv(old: nn.Conv2d, keep_out: torch.Tensor | None, keep_in: torch.Tensor | None) -> nn.Conv2d:
    w = old.weight.detach()
    w = w[keep_out] if keep_out is not None else w
    depthwise = old.groups > 1
    w = w[:, keep_in] if keep_in is not None and not depthwise else w
    out_channels, in_per_group = w.shape[0], w.shape[1]
    groups = out_channels if depthwise else 1
    new = nn.Conv2d(
        in_per_group * groups, out_channels, old.kernel_size, old.stride, old.padding, old.dilation, groups,  # type: ignore[arg-type]
        old.bias is not None, old.padding_mode,
    )  # fmt: skip
    new.weight.data.copy_(w)
    if old.bias is not None and new.bias is not None:
        new.bias.data.copy_(old.bias.detach()[keep_out] if keep_out is not None else old.bias.detach())
    return new


def _norm(old: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), old.eps, old.momentum, old.affine, old.track_running_stats)
    state = {k: v[keep] if v.ndim == 1 else v for k, v in old.state_dict().items()}
    new.load_state_dict(state)
    return new


def _prune(segment: fx.GraphModule, chain: Chain, ratio: float) -> None:
    conv = segment.get_submodule(chain.conv)
    assert isinstance(conv, nn.Conv2d)
    n_keep = max(1, round(conv.out_channels * (1 - ratio)))
    keep = conv.weight.detach().abs().sum(dim=(1, 2, 3)).topk(n_keep).indices.sort().values
    _replace(segment, chain.conv, _conv(conv, keep, None))
    for target in chain.norms:
        _replace(segment, target, _norm(segment.get_submodule(target), keep))  # type: ignore[arg-type]
    if chain.depthwise:
        _replace(segment, chain.depthwise, _conv(segment.get_submodule(chain.depthwise), keep, None))  # type: ignore[arg-type]
    for target in chain.consumers:
        _replace(segment, target, _conv(segment.get_submodule(target), None, keep))  # type: ignore[arg-type]


def prune_segments(net: SplitNet, split: int, ratio: float) -> SplitNet:
    """A copy of ``net`` whose segments ``[0, split)`` (the edge's) have ``ratio`` of every prunable
    convolution's channels removed, by filter L1 norm; boundaries, exits and the other segments are unchanged."""
    pruned = copy.deepcopy(net)
    for segment in list(pruned.segments)[:split]:
        assert isinstance(segment, fx.GraphModule)
        for chain in chains(segment):
            _prune(segment, chain, ratio)
        segment.recompile()
    return pruned.eval()


def prune_and_finetune(
    net: SplitNet, split: int, data: Dataset, config: PruneConfig, train: TrainConfig, progress: bool = False
) -> SplitNet:
    """:func:`prune_segments`, then ``config.epochs`` of joint training (backbone and exits) at ``config.lr``."""
    pruned = prune_segments(net, split, config.ratio)
    if config.epochs:
        tune = TrainConfig(config.epochs, train.batch_size, config.lr, train.weight_decay, train.seed, train.weights)
        train_joint(pruned, data, tune, progress)
    return pruned.eval()
