"""Training a text encoder and its exits, and reading every exit's probabilities.

Two ways to train the exits:

* ``joint``: every exit's cross-entropy at once, weighted by depth (PABEE's weighted average: layer ``i`` has
  weight ``i + 1``), so late layers keep most of the gradient;
* ``exits``: DeeBERT's two stages: the encoder and its last classifier first, then with the encoder frozen the
  earlier exits alone (the full model's accuracy is exactly that of the first stage).

Batches are cut to their own longest text, so short texts cost short sequences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from protos.texttok import TextTokenizer
from split.models.text import TEXT_FAMILIES, TextEncoder, build_text
from split.textdata import TextData

__all__ = ["MODES", "TextConfig", "layer_probs", "train_text"]

MODES = ("joint", "exits")


@dataclass(frozen=True)
class TextConfig:
    """What :func:`train_text` builds and how long it trains."""

    family: str = "mobilebert"
    depth: int = 4
    vocab_size: int = 4000
    max_length: int = 32
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    mode: str = "joint"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.family not in TEXT_FAMILIES:
            raise ValueError(f"unknown text family {self.family!r}; valid families: {list(TEXT_FAMILIES)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown training mode {self.mode!r}; valid modes: {list(MODES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.depth < 2:
            raise ValueError(
                f"epochs, batch_size >= 1 and depth >= 2, got {self.epochs}, {self.batch_size}, {self.depth}"
            )


def _batches(
    ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    order = rng.permutation(len(ids))
    for start in range(0, len(ids), size):
        idx = order[start : start + size]
        length = max(1, int(mask[idx].sum(1).max()))
        yield (torch.from_numpy(ids[idx, :length]), torch.from_numpy(mask[idx, :length]), torch.from_numpy(labels[idx]))


def _epochs(
    model: TextEncoder,
    params: Sequence[nn.Parameter],
    weights: Sequence[float],
    cfg: TextConfig,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    epochs: int,
) -> None:
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    steps = epochs * ((len(arrays[0]) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    total = sum(weights)
    for _ in range(epochs):
        for ids, mask, y in _batches(*arrays, cfg.batch_size, rng):
            logits = model(ids, mask)
            loss = sum(w * loss_fn(out, y) for w, out in zip(weights, logits, strict=True) if w) / total
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def train_text(cfg: TextConfig, data: TextData) -> tuple[TextEncoder, TextTokenizer]:
    """Train a tokenizer on the training split, then the encoder and its exits (``cfg.mode``)."""
    torch.manual_seed(cfg.seed)
    tok = TextTokenizer.train(data.train[0], cfg.vocab_size, cfg.max_length)
    model = build_text(cfg.family, tok.vocab_size, len(data.classes), cfg.depth, cfg.max_length)
    ids, mask = tok.encode(data.train[0])
    arrays = (ids, mask, data.train[1])
    model.train()
    if cfg.mode == "joint":
        _epochs(model, list(model.parameters()), [i + 1.0 for i in range(cfg.depth)], cfg, arrays, cfg.epochs)
    else:
        last = [0.0] * (cfg.depth - 1) + [1.0]
        _epochs(model, list(model.parameters()), last, cfg, arrays, cfg.epochs)
        for p in model.parameters():
            p.requires_grad_(False)
        heads = [p for e in model.exits[:-1] for p in e.parameters()]
        for p in heads:
            p.requires_grad_(True)
        _epochs(model, heads, [1.0] * (cfg.depth - 1) + [0.0], cfg, arrays, max(1, cfg.epochs // 2))
    model.eval()
    return model, tok


@torch.no_grad()
def layer_probs(model: TextEncoder, tok: TextTokenizer, texts: Sequence[str], batch: int = 256) -> np.ndarray:
    """Every exit's probabilities on ``texts``: ``[layers, N, C]`` float32."""
    model.eval()
    out = []
    for start in range(0, len(texts), batch):
        ids, mask = tok.encode(texts[start : start + batch])
        logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
        out.append(torch.stack([torch.softmax(x, -1) for x in logits]).numpy())
    return np.concatenate(out, axis=1).astype(np.float32)
