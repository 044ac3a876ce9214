"""Transfer a pretrained backbone to the user's classes: a linear probe on the frozen backbone, exits on it too.

A 224-px backbone costs hundreds of MFLOPs per image, and a frozen one computes the same features every epoch, so
it runs **once per training image**: one pass stores the final classifier's input (a pooled feature vector) and
the tensor at every exit's split point (float16, in memory-mapped files under ``workdir``, so a large set need not
fit in RAM). The new classifier then trains on the stored features, and the exits train on the stored split
tensors (cross-entropy, or distillation from the trained classifier's logits: :class:`~split.train.ExitLoss`).
The backbone's weights and batch-norm statistics never change, so the full model is the pretrained network with a
new last layer.

Example:
    >>> net = build_splitnet(config, load_pretrained("mobilenet_v2", num_classes=10))      # doctest: +SKIP
    >>> train_transfer(net, data, TrainConfig(epochs=5), workdir)                           # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from split.data import Dataset
from split.partition import SplitNet
from split.progress import Progress
from split.train import ExitLoss, TrainConfig, exit_loss

__all__ = ["classifier_of", "extract", "train_transfer"]


def classifier_of(net: nn.Module) -> nn.Linear:
    """The final classifier: the last ``nn.Linear`` of a :class:`SplitNet`'s last segment, or of a plain module
    (the layer a linear probe trains)."""
    root = net.segments[-1] if isinstance(net, SplitNet) else net
    linears = [m for m in root.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the last segment has no nn.Linear classifier; a linear probe needs one")
    return linears[-1]


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def extract(net: SplitNet, x: Any, workdir: Path, batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """One frozen pass over ``x``: ``features`` (the classifier's input, float32 ``[N, D]``) and, per exit in
    order, its split tensor (float16 memmaps ``[N, *shape]`` in ``workdir``)."""
    net.eval()
    n = len(x)
    shapes = net.boundary_shapes(tuple(x.shape[1:]))
    tensors = [
        np.lib.format.open_memmap(workdir / f"exit{k}.npy", "w+", np.float16, (n, *shapes[pos + 1]))
        for k, pos in enumerate(net.exit_positions)
    ]
    captured: list[torch.Tensor] = []
    hook = classifier_of(net).register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    features: np.ndarray | None = None
    bar = Progress((n + batch_size - 1) // batch_size, "frozen backbone pass") if progress else None
    try:
        for rows in _batches(n, batch_size):
            h = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))
            for i, segment in enumerate(net.segments):
                h = segment(h)
                if i in net.exit_positions:
                    tensors[net.exit_positions.index(i)][rows] = h.numpy()
            feats = captured.pop().reshape(rows.stop - rows.start, -1).numpy()
            features = np.empty((n, feats.shape[1]), np.float32) if features is None else features
            features[rows] = feats
            if bar:
                bar.update()
    finally:
        hook.remove()
        if bar:
            bar.close()
    return {"features": features, "exits": tensors}


def _fit(
    module: nn.Module, inputs: Any, targets: Any, config: TrainConfig, loss_fn: Any, label: str, progress: bool
) -> list[float]:
    """Train ``module`` on stored ``inputs`` (array-like, indexed by batch) against ``targets``; loss per epoch."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(targets)
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    bar = Progress(config.epochs, label) if progress else None
    history = []
    module.train()
    for _ in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            rows = np.sort(idx.numpy())  # sorted reads of a memmap are sequential
            batch_loss = loss_fn(module(torch.from_numpy(np.asarray(inputs[rows], np.float32))), rows)
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
            sched.step()
            total += float(batch_loss.detach()) * len(rows)
        history.append(total / n)
        if bar:
            bar.update(note=f"loss {history[-1]:.3f}")
    if bar:
        bar.close()
    module.eval()
    return history


def train_transfer(
    net: SplitNet,
    data: Dataset,
    config: TrainConfig,
    workdir: Path | None = None,
    progress: bool = True,
    loss: ExitLoss | None = None,
) -> dict[str, list[float]]:
    """Linear probe plus exits on ``net``'s frozen, pretrained backbone; the loss history of each part."""
    loss = loss or ExitLoss()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        stored = extract(net, data.x_train, Path(tmp), progress=progress)
        y = torch.from_numpy(np.asarray(data.y_train, np.int64))
        head = classifier_of(net)
        history = {"classifier": _fit(head, stored["features"], y, config, lambda out, r: nn.functional.cross_entropy(
            out, y[r]), "linear probe", progress)}  # fmt: skip
        with torch.no_grad():
            final = head(torch.from_numpy(stored["features"]))
        for k, (exit_head, tensor) in enumerate(zip(net.exits, stored["exits"], strict=True)):
            history[f"exit{k}"] = _fit(exit_head, tensor, y, config, lambda out, r: exit_loss(
                out, final[r], y[r], loss), f"exit{k}", progress)  # fmt: skip
        del stored
    net.eval()
    return history
