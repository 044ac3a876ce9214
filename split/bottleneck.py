"""A learned bottleneck at a split point: an encoder on the edge squeezes the boundary tensor into a few channels,
a decoder in the cloud restores what the tail expects (head-network distillation, as BottleFit does).

The backbone stays frozen. The encoder (a 1x1 convolution, or a 3x3 one with a stride that also cuts the spatial
size) ends the edge's head; the int8 wire after it is simulated in training (per-sample affine fake-quantisation
with a straight-through gradient, what :func:`protos.codecs.encode` does to one sample), so the tensor the
deployed edge sends is what was trained. The decoder (a transposed or 1x1 convolution, ReLU6, a depthwise 3x3,
ReLU6, a 1x1 back to the boundary's channels) begins the cloud's tail. No labels: the two learn to make the
frozen segments after the split compute what they compute on the uncompressed tensor: a mean squared error on
the restored tensor plus one on the tensor ``distill_segments`` segments later (or a temperature-softened KL on
the logits, when those segments reach the end), each divided by its target's variance.

The frozen head runs **once per training sample**: its tensor at the split and the distillation target are
stored (float16 memmaps), and only the encoder, the decoder and the few frozen segments between run per step.

Example:
    >>> spec = BottleneckSpec.parse("2:4")                                   # doctest: +SKIP
    >>> coder, report = train_bottleneck(net, data.x_train, spec, BottleneckConfig())   # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from split.partition import SplitNet
from split.progress import Progress

__all__ = ["BottleneckConfig", "BottleneckSpec", "Coder", "Decoder", "Encoder", "fake_int8", "train_bottleneck"]


@dataclass(frozen=True)
class BottleneckSpec:
    """A bottleneck asked for: at split point ``split``, ``channels`` channels, spatial ``stride`` (1: same size)."""

    split: int
    channels: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.split < 1 or self.channels < 1 or self.stride not in (1, 2, 4):
            raise ValueError(
                f"bottleneck {self.split}:{self.channels}:{self.stride}: the split point is >= 1 (between two"
                " segments), channels >= 1, the stride 1, 2 or 4"
            )

    @classmethod
    def parse(cls, text: str) -> BottleneckSpec:
        """``SPLIT:CHANNELS`` or ``SPLIT:CHANNELS:STRIDE`` (``2:4``, ``1:8:2``)."""
        parts = text.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            return cls(*(int(p) for p in parts))
        except (TypeError, ValueError):
            raise ValueError(
                f"bad bottleneck {text!r}: write SPLIT:CHANNELS or SPLIT:CHANNELS:STRIDE (e.g. 2:4, 1:8:2), the"
                " split point >= 1, channels >= 1, the stride 1, 2 or 4"
            ) from None


@dataclass(frozen=True)
class BottleneckConfig:
    """How encoder and decoder train: epochs over the (at most ``max_samples``) training samples, batch size,
    learning rate, the segments after the split whose output they must reproduce, the logits' temperature."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-2
    distill_segments: int = 1
    temperature: float = 2.0
    max_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.distill_segments < 1 or not self.lr > 0:
            raise ValueError(f"bottleneck training: epochs, batch size, distill segments >= 1 and lr > 0: {self}")


def fake_int8(x: torch.Tensor) -> torch.Tensor:
    """Per-sample affine int8 quantisation and back (as the int8 codec does to one sample), with a
    straight-through gradient."""
    flat = x.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    low, high = torch.minimum(low, torch.zeros_like(low)), torch.maximum(high, torch.zeros_like(high))
    scale = ((high - low) / 255).clamp_min(1e-8).view(-1, *([1] * (x.dim() - 1)))
    zero = (-128 - low.view_as(scale) / scale).round()
    q = (torch.round(x / scale) + zero).clamp(-128, 127)
    return x + ((q - zero) * scale - x).detach()


class Encoder(nn.Module):
    """``C -> c`` channels: a 1x1 convolution, or a 3x3 one of stride ``stride``."""

    def __init__(self, channels_in: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        k = 1 if stride == 1 else 3
        self.conv = nn.Conv2d(channels_in, channels, k, stride, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Decoder(nn.Module):
    """``c -> C`` channels at the boundary's size: up (transposed convolution of ``stride``, or 1x1), ReLU6, a
    depthwise 3x3, ReLU6, a 1x1 to the boundary's channels (no activation: a block's output can be negative)."""

    def __init__(self, channels: int, channels_out: int, stride: int = 1) -> None:
        super().__init__()
        hidden = max(2 * channels_out, 4 * channels, 16)
        up = nn.ConvTranspose2d(channels, hidden, stride, stride) if stride > 1 else nn.Conv2d(channels, hidden, 1)
        self.body = nn.Sequential(
            up,
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, channels_out, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Coder(nn.Module):
    """Encoder, the simulated int8 wire, decoder (what training optimises end to end)."""

    def __init__(self, channels_in: int, spec: BottleneckSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = Encoder(channels_in, spec.channels, spec.stride)
        self.decoder = Decoder(spec.channels, channels_in, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(fake_int8(self.encoder(x)))


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def _store(net: SplitNet, x: Any, split: int, later: int, workdir: Path, batch: int = 64) -> tuple[Any, Any]:
    """One frozen pass: the tensors at boundaries ``split`` and ``later`` of every sample (float16 memmaps)."""
    stored: list[Any] = [None, None]
    for rows in _batches(len(x), batch):
        h = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))
        for i, segment in enumerate(net.segments[:later]):
            h = segment(h)
            for slot, at in enumerate((split, later)):
                if i + 1 == at:
                    if stored[slot] is None:
                        shape = (len(x), *h.shape[1:])
                        stored[slot] = np.lib.format.open_memmap(workdir / f"b{at}.npy", "w+", np.float16, shape)
                    stored[slot][rows] = h.numpy()
    return stored[0], stored[1]


def _variance(a: Any, rows: int = 512) -> float:
    return float(np.asarray(a[:rows], np.float32).var()) + 1e-8


def _loss(coder: Coder, tail: nn.Module, h: torch.Tensor, target: torch.Tensor, var: tuple[float, float],
          logits: bool, temperature: float) -> torch.Tensor:  # fmt: skip
    restored = coder(h)
    out = tail(restored)
    rec = nn.functional.mse_loss(restored, h) / var[0]
    if logits:
        t = temperature
        kd = nn.functional.kl_div(
            nn.functional.log_softmax(out / t, -1), nn.functional.log_softmax(target / t, -1),
            log_target=True, reduction="batchmean",
        ) * t * t  # fmt: skip
        return rec + kd
    return rec + nn.functional.mse_loss(out, target) / var[1]


def _fit(coder: Coder, tail: nn.Module, h: Any, target: Any, config: BottleneckConfig, logits: bool,
         progress: bool) -> list[float]:  # fmt: skip
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(coder.parameters(), lr=config.lr, weight_decay=1e-4)
    n = len(h)
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
    var = (_variance(h), _variance(target))
    bar = Progress(config.epochs, f"bottleneck at split {coder.spec.split}") if progress else None
    history = []
    coder.train()
    for _ in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            rows = np.sort(idx.numpy())
            xb = torch.from_numpy(np.asarray(h[rows], np.float32))
            tb = torch.from_numpy(np.asarray(target[rows], np.float32))
            loss = _loss(coder, tail, xb, tb, var, logits, config.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        history.append(total / n)
        if bar:
            bar.update(note=f"loss {history[-1]:.4f}")
    if bar:
        bar.close()
    return history


def train_bottleneck(
    net: SplitNet, x: Any, spec: BottleneckSpec, config: BottleneckConfig, progress: bool = True
) -> tuple[Coder, dict[str, Any]]:
    """Train a bottleneck at ``spec.split`` of the frozen ``net`` on the samples ``x`` (no labels); the coder
    (evaluation mode) and its training report (samples, epochs, seconds, the loss per epoch, what it distils)."""
    n = len(net.segments)
    if not 1 <= spec.split < n:
        raise ValueError(f"a bottleneck at split point {spec.split}: valid split points are 1..{n - 1}")
    torch.manual_seed(config.seed)
    later = min(spec.split + config.distill_segments, n)
    if config.max_samples is not None and len(x) > config.max_samples:
        x = x[np.unique(np.linspace(0, len(x) - 1, config.max_samples).round().astype(np.int64))]
    net.eval()
    trainable = [p for p in net.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)  # the backbone is frozen: no gradients kept for it
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster than two on a busy machine
    with tempfile.TemporaryDirectory() as tmp:
        h, target = _store(net, x, spec.split, later, Path(tmp))
        stored_s = time.perf_counter() - started
        coder = Coder(int(h.shape[1]), spec)
        tail = nn.Sequential(*net.segments[spec.split : later]).eval()
        history = _fit(coder, tail, h, target, config, later == n, progress)
        del h, target
    for p in trainable:
        p.requires_grad_(True)
    torch.set_num_threads(threads)
    coder.eval()
    report = {
        "samples": len(x),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "distilled": "logits (KL)" if later == n else f"boundary {later} (MSE)",
        "loss": history,
        "frozen_pass_s": stored_s,
        "seconds": time.perf_counter() - started,
        "torch_threads": 1,
    }
    return coder, report
