"""Train (cached) -> calibrate -> export: the offline path from a dataset to a bundle."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.policy import criterion, softmax
from protos.bundle import EDGE_PRECISIONS, Bundle, BundleError, Manifest
from protos.codecs import Codec
from split.calibrate import Calibration, calibrate
from split.data import Dataset
from split.export import export_bundle, with_calibration
from split.models import build
from split.partition import ModelConfig, SplitNet, build_splitnet
from split.prune import PruneConfig, prune_and_finetune
from split.quantize import edge_outputs
from split.samples import Samples
from split.train import ExitLoss, TrainConfig, predict, train_exits, train_joint
from split.transfer import train_transfer
from split.usermodel import load_user_model, user_model_key

__all__ = [
    "QUANTIZATION_SAMPLES",
    "BundleConfig",
    "Pretrained",
    "UserModel",
    "calibrate_net",
    "default_cache_dir",
    "make_bundle",
    "quantization_inputs",
    "trained_model",
]


@dataclass(frozen=True)
class BundleConfig:
    """What to calibrate and export: the exit criterion, the accuracy budget (fraction), the default split, and
    the edge's precision (``int8``: quantized segments and exits, thresholds calibrated on the int8 exits)."""

    criterion: str = "max_softmax"
    budget: float = 0.01
    default_split: int = 1
    codec: str = "fp32"
    confidence: float = 0.95
    edge_precision: str = "fp32"

    def __post_init__(self) -> None:
        criterion(self.criterion)
        if self.edge_precision not in EDGE_PRECISIONS:
            raise ValueError(f"edge precision {self.edge_precision!r} is not one of {EDGE_PRECISIONS}")
        Codec.parse(self.codec)
        if not 0 <= self.budget < 1:
            raise ValueError(f"budget is a fraction in [0, 1), got {self.budget}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence is a probability in [0.5, 1), got {self.confidence}")


def default_cache_dir() -> Path:
    """``$EDGESPLIT_CACHE``, else ``~/.cache/edgesplit``."""
    return Path(os.environ.get("EDGESPLIT_CACHE") or Path.home() / ".cache" / "edgesplit")


def _key(*parts: Any) -> str:
    blob = json.dumps([_fields(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True)
    return hashlib.sha256((blob + torch.__version__).encode()).hexdigest()[:16]


def _fields(config: Any) -> dict[str, Any]:
    """A config's fields for a cache key; an fp32 edge is left out, so keys from before the option still hold."""
    fields = asdict(config)
    if fields.get("edge_precision") == "fp32":
        del fields["edge_precision"]
    return fields


@dataclass(frozen=True)
class UserModel:
    """A user's ``nn.Module``: ``function`` in the Python file ``path`` builds it; ``weights`` is its trained
    state_dict (then only the exits are trained, on the frozen backbone)."""

    path: str
    function: str
    weights: str | None = None


@dataclass(frozen=True)
class Pretrained:
    """Start from ImageNet weights: the family's published file (``weights=None``, :mod:`split.pretrained`) or
    the user's own state_dict of the same layout. A new classifier for the data's classes (a linear probe) and
    the exits train on the frozen backbone, run once per image (:mod:`split.transfer`); ``finetune_blocks`` > 0:
    the last that many blocks of the backbone (:mod:`split.finetune`) are then fine-tuned with the classifier."""

    weights: str | None = None
    finetune_blocks: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.finetune_blocks, int) or self.finetune_blocks < 0:
            raise ValueError(
                f"finetune_blocks is a count of blocks >= 0 (0: a linear probe), got {self.finetune_blocks!r}"
            )

    def key(self, family: str) -> str:
        """The starting point's identity for cache keys: the weights' sha256 prefix, and the fine-tuned blocks'
        count unless 0 (so a linear probe keeps the keys it had before the option)."""
        from split.pretrained import pretrained_path, sha256

        digest = sha256(Path(self.weights) if self.weights else pretrained_path(family))[:16]
        return f"{digest}-finetune{self.finetune_blocks}" if self.finetune_blocks else digest


def _module(
    model: ModelConfig, user: UserModel | None, pretrained: Pretrained | None
) -> tuple[torch.nn.Module, list[str]]:
    """The network to split, and what identifies its starting weights beyond ``model`` (for cache keys)."""
    if pretrained is not None:
        from split.pretrained import load_pretrained

        weights = Path(pretrained.weights) if pretrained.weights else None
        module = load_pretrained(model.family, weights, model.num_classes, model.image_size)
        if model.in_channels != 3:
            raise ValueError(
                f"a pretrained ImageNet backbone takes RGB images (3 channels); this data has {model.in_channels}:"
                " give images (--data DIR or an .npz of uint8 [N, H, W, 3]), which the bundle's preprocessing makes RGB"
            )
        return module, ["transfer", pretrained.key(model.family)]
    if user is not None:
        return load_user_model(user.path, user.function, user.weights), [
            user_model_key(user.path, user.function, user.weights)
        ]
    return build(model.family, model.in_channels, model.num_classes, model.width, model.image_size), []


def trained_model(
    data: Dataset,
    model: ModelConfig,
    train: TrainConfig,
    cache: Path,
    progress: bool = True,
    user: UserModel | None = None,
    loss: ExitLoss | None = None,
    pretrained: Pretrained | None = None,
) -> tuple[SplitNet, bool]:
    """The trained network for these configs, from ``cache`` when present; (net, was_cached).

    A family (``model.family``) is trained jointly with its exits; a :class:`UserModel` with weights keeps
    its backbone and trains the exits alone; a :class:`Pretrained` family gets a linear probe (and fine-tuned
    last blocks, if asked) and exits on its frozen backbone. ``loss`` is how the exits learn (default:
    cross-entropy; only a non-default one enters the cache key, so models trained before it existed stay cached).
    """
    loss = loss or ExitLoss()
    loss_key = [] if loss == ExitLoss() else [loss]
    torch.manual_seed(train.seed)
    module, origin = _module(model, user, pretrained)
    key = _key(model, train, data.cache_key, *origin, *loss_key)
    net = build_splitnet(model, module)
    path = cache / "models" / f"{model.family}-{data.name}-{key}.pt"
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval(), True
    if pretrained is not None:
        train_transfer(net, data, train, cache, progress, loss, module, pretrained.finetune_blocks)
    elif user is not None and user.weights is not None:
        train_exits(net, data, train, progress, loss)
    else:
        train_joint(net, data, train, progress, loss)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return net.eval(), False


def calibrate_net(
    net: SplitNet, data: Dataset, config: BundleConfig, exits: list[np.ndarray] | None = None
) -> Calibration:
    """Calibrate every exit of ``net`` on ``data``'s calibration split; ``exits``: the exits' logits on it, when
    they are not ``net``'s own (an int8 edge's)."""
    final, own = predict(net, data.x_cal)
    exits = own if exits is None else exits
    crit = criterion(config.criterion)
    names = [f"exit{k}" for k in range(len(exits))]
    return calibrate(
        data.y_cal,
        softmax(final),
        [softmax(e) for e in exits],
        [crit] * len(exits),
        names,
        config.budget,
        config.confidence,
    )


def make_bundle(
    data: Dataset,
    model: ModelConfig,
    train: TrainConfig,
    config: BundleConfig,
    cache: Path,
    out: Path | None = None,
    progress: bool = True,
    user: UserModel | None = None,
    loss: ExitLoss | None = None,
    prune: PruneConfig | None = None,
    pretrained: Pretrained | None = None,
) -> tuple[Bundle, SplitNet]:
    """Train (or load), calibrate and export; reuses an exported bundle whose inputs are unchanged. With
    ``prune``, the edge's segments (before the default split) are channel-pruned and the net fine-tuned;
    with ``pretrained``, the family starts from ImageNet weights (:class:`Pretrained`)."""
    net, _ = trained_model(data, model, train, cache, progress, user, loss, pretrained)
    if out is None:
        extra = user_model_key(user.path, user.function, user.weights) if user else ""
        loss_key: list[Any] = [] if loss is None or loss == ExitLoss() else [loss]
        loss_key += [prune] if prune else []
        loss_key += ["transfer", pretrained.key(model.family)] if pretrained else []
        key = _key(model, train, config, data.cache_key, extra, *loss_key)
        out = cache / "bundles" / f"{model.family}-{data.name}-{key}"
        try:
            return Bundle.load(out), net
        except BundleError:
            pass
    if prune is not None:
        net = prune_and_finetune(net, config.default_split, data, prune, train, progress)
    calibration = calibrate_net(net, data, config)
    int8 = config.edge_precision == "int8"
    manifest = export_bundle(
        net,
        model,
        out,
        model_name=f"{model.family}_{data.name}",
        classes=data.classes,
        default_split=config.default_split,
        calibration=calibration,
        criterion=config.criterion,
        preprocessing=data.preprocessing,
        codec=config.codec,
        edge_precision=config.edge_precision,
        calibration_inputs=quantization_inputs(data.x_cal) if int8 else None,
    )
    if int8:  # the thresholds must hold for the exits the edge runs: the quantized ones
        logits = _edge_logits(out, manifest, data.x_cal)
        with_calibration(out, manifest, calibrate_net(net, data, config, [logits[e.name] for e in manifest.exits]))
    return Bundle.load(out), net


QUANTIZATION_SAMPLES = 512
"""At most this many calibration samples of lazy image samples calibrate the int8 quantization (arrays: all)."""


def quantization_inputs(x: Samples) -> np.ndarray:
    """The int8 quantization's calibration inputs: an array as it is; of lazy samples, at most
    :data:`QUANTIZATION_SAMPLES`, evenly spaced (the calibration split is in class order)."""
    if isinstance(x, np.ndarray):
        return x
    rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), QUANTIZATION_SAMPLES)).round().astype(np.int64))
    return x[rows]


def _edge_logits(out: Path, manifest: Manifest, x: Samples, batch: int = 256) -> dict[str, np.ndarray]:
    """The bundle's edge exits' logits on ``x``: an array at once, lazy samples in batches."""
    if isinstance(x, np.ndarray):
        return edge_outputs(out, manifest, x)[1]
    parts = [edge_outputs(out, manifest, x[i : i + batch])[1] for i in range(0, len(x), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
