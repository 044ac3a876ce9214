"""Text encoders with an exit after every layer: a MobileBERT-style one (bottleneck blocks) and a plain small BERT.

Both are trained here from scratch (no pretrained weights can be had offline), so they are tiny. Each is
``embed`` (token and position embeddings, LayerNorm), ``layers`` (encoder layers ``(hidden, mask) -> hidden``,
``hidden`` ``[N, L, d]``, ``mask`` int64 ``[N, L]`` with 0 at padding) and ``exits``, one classifier per layer on
the first token's hidden state (a pooler ``tanh(W h)`` then a linear layer, as DeeBERT). The last exit is the
model's classifier.

Padding never changes an answer: padded keys get ``-1e9`` before the attention softmax (their weight is exactly
0 in float32) and everything else is per token, so a row's first token sees the same numbers at any padding.

* ``mobilebert``: MobileBERT's shape, smaller: a wide residual stream (``d``), each block projects it into a
  narrow bottleneck (``d // 4``), runs attention and ``ffns`` stacked feed-forward networks there, and projects
  back (Sun et al., 2020).
* ``bert``: post-LayerNorm encoder layers (Devlin et al., 2019), ``d`` wide with a ``4 d`` feed-forward network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TEXT_FAMILIES", "TextEncoder", "build_text"]


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads, self.head = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, self.head).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head)
        scores = scores + (mask[:, None, None, :].to(x.dtype) - 1.0) * 1e9
        context = torch.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).reshape(n, length, width))


class _FFN(nn.Module):
    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, inner), nn.GELU(), nn.Linear(inner, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


class BertLayer(nn.Module):
    """A post-LayerNorm encoder layer."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attention = _Attention(width, heads)
        self.norm = nn.LayerNorm(width)
        self.ffn = _FFN(width, 4 * width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.norm(x + self.attention(x, mask)))


class BottleneckLayer(nn.Module):
    """MobileBERT's block: into the bottleneck, attention and stacked FFNs there, back out (residual, norm)."""

    def __init__(self, width: int, heads: int, ffns: int = 2) -> None:
        super().__init__()
        inner = width // 4
        self.down = nn.Sequential(nn.Linear(width, inner), nn.LayerNorm(inner))
        self.attention = _Attention(inner, heads)
        self.norm = nn.LayerNorm(inner)
        self.ffns = nn.Sequential(*(_FFN(inner, 4 * inner) for _ in range(ffns)))
        self.up = nn.Linear(inner, width)
        self.out_norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        h = self.ffns(self.norm(h + self.attention(h, mask)))
        return self.out_norm(x + self.up(h))


class _Exit(nn.Module):
    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.Linear(width, width)
        self.classify = nn.Linear(width, classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.tanh(self.pool(hidden[:, 0])))


class TextEncoder(nn.Module):
    """Embeddings, ``depth`` encoder layers and an exit after each (see the module docstring)."""

    def __init__(
        self, family: str, vocab: int, classes: int, depth: int = 4, width: int = 64, max_length: int = 64
    ) -> None:
        super().__init__()
        if family not in TEXT_FAMILIES:
            raise ValueError(f"unknown text family {family!r}; valid families: {list(TEXT_FAMILIES)}")
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (an exit needs a later layer), got {depth}")
        self.family, self.depth, self.width, self.max_length = family, depth, width, max_length
        self.tokens = nn.Embedding(vocab, width, padding_idx=0)
        self.positions = nn.Embedding(max_length, width)
        self.embed_norm = nn.LayerNorm(width)
        if family == "bert":
            self.layers = nn.ModuleList(BertLayer(width, 2) for _ in range(depth))
        else:
            self.layers = nn.ModuleList(BottleneckLayer(width, 2) for _ in range(depth))
        self.exits = nn.ModuleList(_Exit(width, classes) for _ in range(depth))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` token ids -> ``[N, L, d]``."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.embed_norm(self.tokens(ids) + self.positions(positions)[None])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The logits of every exit, in layer order (the last is the model's)."""
        hidden, logits = self.embed(ids), []
        for layer, head in zip(self.layers, self.exits, strict=True):
            hidden = layer(hidden, mask)
            logits.append(head(hidden))
        return logits


TEXT_FAMILIES = {"mobilebert": 128, "bert": 64}
"""The families and their default width (MobileBERT's residual stream is wide, its bottleneck a quarter)."""


def build_text(family: str, vocab: int, classes: int, depth: int = 4, max_length: int = 64) -> TextEncoder:
    """A family at its default width."""
    if family not in TEXT_FAMILIES:
        raise ValueError(f"unknown text family {family!r}; valid families: {list(TEXT_FAMILIES)}")
    return TextEncoder(family, vocab, classes, depth, TEXT_FAMILIES[family], max_length)
