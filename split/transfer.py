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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from split.data import Dataset
from split.finetune import BN_MIN_BATCH, Tail, fine_tuned_tail, recorder
from split.graph import boundaries, resolve
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


def _segment_outputs(net: SplitNet, h: torch.Tensor) -> list[torch.Tensor]:
    """Run ``net``'s segments on ``h``; the tensors its exits read, in exit order."""
    outs = []
    for i, segment in enumerate(net.segments):
        h = segment(h)
        if i in net.exit_positions:
            outs.append(h)
    return outs


def _tail_nodes(net: SplitNet, tail: Tail) -> list[str]:
    """The nodes of ``tail.graph`` to store: each exit's split point, the cut, the classifier's input."""
    gm = tail.graph
    cuts = resolve(boundaries(gm), net.boundary_names, gm)
    linears = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Linear)]
    return [*(cuts[pos].node for pos in net.exit_positions), tail.cut, linears[-1].args[0].name]


@contextmanager
def _frozen_pass(net: SplitNet, tail: Tail | None) -> Iterator[Callable[[torch.Tensor], list[torch.Tensor]]]:
    """A function of a batch: the exits' split tensors, [the tensor at ``tail``'s cut,] the classifier's input."""
    if tail is not None:
        recording = recorder(tail.graph, _tail_nodes(net, tail))
        yield lambda h: list(recording(h))
        return
    captured: list[torch.Tensor] = []
    hook = classifier_of(net).register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        yield lambda h: [*_segment_outputs(net, h), captured.pop()]
    finally:
        hook.remove()


def _store(stored: dict[str, Any], name: str, rows: slice, value: torch.Tensor, n: int, workdir: Path) -> None:
    """Write ``value`` into rows ``rows`` of ``stored[name]``, made on first use: ``features`` a float32 array
    ``[n, D]``, any other a float16 memmap ``[n, *shape]`` in ``workdir``."""
    if name not in stored:
        shape = (n, value[0].numel()) if name == "features" else (n, *value.shape[1:])
        stored[name] = (
            np.empty(shape, np.float32)
            if name == "features"
            else np.lib.format.open_memmap(workdir / f"{name}.npy", "w+", np.float16, shape)
        )
    stored[name][rows] = value.reshape(len(value), *stored[name].shape[1:]).numpy()


@torch.no_grad()
def extract(
    net: SplitNet, x: Any, workdir: Path, batch_size: int = 64, progress: bool = True, tail: Tail | None = None
) -> dict[str, Any]:
    """One frozen pass over ``x``: ``features`` (the classifier's input, float32 ``[N, D]``), per exit in order
    its split tensor (``exits``, float16 memmaps ``[N, *shape]`` in ``workdir``) and, with ``tail``, ``cut``: the
    tensor at its cut (the fine-tuned blocks' input, a float16 memmap too; else ``None``)."""
    net.eval()
    n = len(x)
    names = [*(f"exit{k}" for k in range(len(net.exits))), *(["cut"] if tail else []), "features"]
    stored: dict[str, Any] = {}
    bar = Progress((n + batch_size - 1) // batch_size, "frozen backbone pass") if progress else None
    with _frozen_pass(net, tail) as run:
        for rows in _batches(n, batch_size):
            outs = run(torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)))
            for name, value in zip(names, outs, strict=True):
                _store(stored, name, rows, value, n, workdir)
            if bar:
                bar.update()
    if bar:
        bar.close()
    exits = [stored[f"exit{k}"] for k in range(len(net.exits))]
    return {"features": stored["features"], "exits": exits, "cut": stored.get("cut")}


def _train_mode(module: nn.Module, frozen_bn: bool) -> None:
    """``module`` in training mode; with ``frozen_bn`` its batch norms stay in evaluation mode."""
    module.train()
    for m in module.modules():
        if frozen_bn and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _fit(
    module: nn.Module,
    inputs: Any,
    targets: Any,
    config: TrainConfig,
    loss_fn: Any,
    label: str,
    progress: bool,
    min_batch: int = 1,
) -> list[float]:
    """Train ``module`` on stored ``inputs`` (array-like, indexed by batch) against ``targets``; loss per epoch.
    Batch norms learn statistics only from batches of at least ``min_batch`` samples: with a smaller
    ``config.batch_size`` they stay in evaluation mode, else a smaller last batch of an epoch is skipped."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(targets)
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    bar = Progress(config.epochs, label) if progress else None
    history = []
    frozen_bn = config.batch_size < min_batch
    _train_mode(module, frozen_bn)
    for _ in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            if len(idx) < min_batch and not frozen_bn:
                continue
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


@torch.no_grad()
def _logits(module: nn.Module, inputs: Any, batch_size: int = 256) -> torch.Tensor:
    """``module`` (evaluation mode) on stored ``inputs``, in batches."""
    module.eval()
    return torch.cat([module(torch.from_numpy(np.asarray(inputs[rows], np.float32)))
                      for rows in _batches(len(inputs), batch_size)])  # fmt: skip


def _cross_entropy(y: torch.Tensor) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """The loss of a batch's logits against the labels ``y`` of its rows."""
    return lambda out, rows: nn.functional.cross_entropy(out, y[rows])


def _tail(net: SplitNet, module: nn.Module | None, blocks: int, input_shape: tuple[int, ...]) -> Tail | None:
    """The fine-tuned tail of ``blocks`` blocks (``None`` for 0: a linear probe); validated before any pass."""
    if not blocks:
        return None
    if module is None:
        raise ValueError(f"fine-tuning {blocks} blocks needs the module the SplitNet was built from (module=)")
    return fine_tuned_tail(module, net, input_shape, blocks)


def train_transfer(
    net: SplitNet,
    data: Dataset,
    config: TrainConfig,
    workdir: Path | None = None,
    progress: bool = True,
    loss: ExitLoss | None = None,
    module: nn.Module | None = None,
    finetune_blocks: int = 0,
) -> dict[str, list[float]]:
    """A linear probe on ``net``'s frozen, pretrained backbone, then (``finetune_blocks`` > 0) the last blocks of
    ``module`` (the module ``net`` was built from) fine-tuned with it, then the exits (distilling from the final
    logits with a ``kd`` loss); the loss history of each part."""
    loss = loss or ExitLoss()
    tail = _tail(net, module, finetune_blocks, tuple(data.x_train.shape[1:]))
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        stored = extract(net, data.x_train, Path(tmp), progress=progress, tail=tail)
        y = torch.from_numpy(np.asarray(data.y_train, np.int64))
        ce = _cross_entropy(y)
        head = classifier_of(net)
        history = {"classifier": _fit(head, stored["features"], y, config, ce, "linear probe", progress)}
        if tail is not None:  # the probed classifier is where the fine-tuning starts (LP-FT)
            history["finetune"] = _fit(tail.module, stored["cut"], y, config, ce,
                                       f"fine-tune {len(tail.blocks)} blocks", progress, BN_MIN_BATCH)  # fmt: skip
        final = _logits(head, stored["features"]) if tail is None else _logits(tail.module, stored["cut"])
        for k, (exit_head, tensor) in enumerate(zip(net.exits, stored["exits"], strict=True)):
            history[f"exit{k}"] = _fit(exit_head, tensor, y, config, lambda out, r: exit_loss(
                out, final[r], y[r], loss), f"exit{k}", progress)  # fmt: skip
        del stored
    net.eval()
    return history
