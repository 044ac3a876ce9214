"""Joint training of a backbone and its exits (BranchyNet): a weighted sum of every classifier's loss.

An exit's loss is cross-entropy against the labels, or (:class:`ExitLoss` ``kind="kd"``) distillation from the
final classifier: ``T² · KL(softmax(final / T) ‖ softmax(exit / T))`` on the detached final logits (Hinton et
al.'s soft targets), mixed with ``alpha`` times the cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from split.data import Dataset
from split.partition import SplitNet
from split.progress import Progress
from split.samples import Samples

__all__ = [
    "EXIT_LOSSES",
    "ExitLoss",
    "TrainConfig",
    "exit_loss",
    "loss_weights",
    "predict",
    "train_exits",
    "train_joint",
]

EXIT_LOSSES = ("ce", "kd")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings. ``weights``: per-exit loss weights then the final classifier's (None: BranchyNet-style
    decreasing from 1.0 at the first exit to 0.5 at the final classifier)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"epochs, batch_size and lr must be positive, got {self.epochs}, {self.batch_size}, {self.lr}"
            )


@dataclass(frozen=True)
class ExitLoss:
    """How exits learn: ``ce`` (cross-entropy on the labels) or ``kd`` (distillation from the final classifier
    at ``temperature``, plus ``alpha`` times the cross-entropy). The final classifier always uses cross-entropy."""

    kind: str = "ce"
    temperature: float = 4.0
    alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in EXIT_LOSSES:
            raise ValueError(f"exit loss {self.kind!r} is not one of {EXIT_LOSSES}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha (the cross-entropy share of a kd loss) must be in [0, 1], got {self.alpha}")


def exit_loss(logits: torch.Tensor, final: torch.Tensor, labels: torch.Tensor, config: ExitLoss) -> torch.Tensor:
    """One exit's loss for a batch: cross-entropy, or distillation from the (detached) ``final`` logits."""
    ce = nn.functional.cross_entropy(logits, labels)
    if config.kind == "ce":
        return ce
    t = config.temperature
    soft = nn.functional.log_softmax(final.detach() / t, dim=-1)
    kd = nn.functional.kl_div(
        nn.functional.log_softmax(logits / t, dim=-1), soft, reduction="batchmean", log_target=True
    )
    return (1 - config.alpha) * t * t * kd + config.alpha * ce


def loss_weights(config: TrainConfig, n_exits: int) -> list[float]:
    """The weight of each exit's loss, then the final classifier's."""
    if config.weights is None:
        return [float(w) for w in np.linspace(1.0, 0.5, n_exits + 1)]
    if len(config.weights) != n_exits + 1:
        raise ValueError(f"weights needs {n_exits + 1} values (one per exit, then the final), got {config.weights}")
    return list(config.weights)


def train_joint(
    net: SplitNet, data: Dataset, config: TrainConfig, progress: bool = True, loss: ExitLoss | None = None
) -> list[float]:
    """Train ``net`` (backbone and exits together) on ``data``'s train split; returns the mean loss per epoch."""
    weights = loss_weights(config, len(net.exits))
    return _train(net, net.parameters(), weights, data, config, "training", progress, loss=loss or ExitLoss())


def train_exits(
    net: SplitNet, data: Dataset, config: TrainConfig, progress: bool = True, loss: ExitLoss | None = None
) -> list[float]:
    """Train only the exits of ``net`` on a frozen, already trained backbone; returns the mean loss per epoch.

    The backbone's parameters and batch-norm statistics do not change, so the full model's predictions stay
    exactly what they were. Every exit's loss weighs the same (they do not compete for the backbone).
    """
    for p in net.segments.parameters():
        p.requires_grad_(False)
    try:
        weights = [1.0] * len(net.exits) + [0.0]
        return _train(
            net, net.exits.parameters(), weights, data, config, "training exits", progress, True, loss or ExitLoss()
        )
    finally:
        for p in net.segments.parameters():
            p.requires_grad_(True)


def _train(
    net: SplitNet,
    parameters: Iterable[nn.Parameter],
    weights: list[float],
    data: Dataset,
    config: TrainConfig,
    label: str,
    progress: bool,
    frozen: bool = False,
    loss: ExitLoss = ExitLoss(),
) -> list[float]:
    torch.manual_seed(config.seed)
    x, y = data.x_train, torch.from_numpy(data.y_train)  # x: indexed per batch (lazy samples stay lazy)
    opt = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
    bar = Progress(config.epochs, label) if progress else None
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    net.train()
    if frozen:
        net.segments.eval()  # batch-norm statistics stay those of the trained backbone
    for _ in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(config.batch_size):
            final, exits = net.forward_all(torch.from_numpy(x[idx.numpy()]))
            losses = [exit_loss(out, final, y[idx], loss) for out in exits]
            losses.append(nn.functional.cross_entropy(final, y[idx]))
            batch_loss = sum(w * term for w, term in zip(weights, losses, strict=True) if w)
            opt.zero_grad()
            batch_loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            total += float(batch_loss.detach()) * len(idx)  # type: ignore[union-attr]
        history.append(total / len(x))
        if bar:
            bar.update(note=f"loss {history[-1]:.3f}")
    if bar:
        bar.close()
    net.eval()
    return history


@torch.no_grad()
def predict(net: SplitNet, x: Samples, batch_size: int = 512) -> tuple[np.ndarray, list[np.ndarray]]:
    """Final logits and each exit's logits for ``x``, in eval mode."""
    net.eval()
    finals, exits = [], []
    for start in range(0, len(x), batch_size):
        final, outs = net.forward_all(torch.from_numpy(x[start : start + batch_size]))
        finals.append(final.numpy())
        exits.append([o.numpy() for o in outs])
    per_exit = [np.concatenate([batch[k] for batch in exits]) for k in range(len(net.exits))]
    return np.concatenate(finals), per_exit
