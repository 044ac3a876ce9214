"""A user's own ``nn.Module``: a Python file, the function in it that builds the model, optional trained weights.

The weights are a ``state_dict`` loaded with ``torch.load(..., weights_only=True)``: tensors only, nothing
unpickled that could run code. The module then goes through the same path as the built-in families: traced
split points, exits, training (exits only when the backbone comes trained), calibration and export.

Example:
    >>> model = load_user_model("mynet.py", "build", weights="mynet.pt")     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_user_model", "user_model_key"]


def load_user_model(
    path: str | Path, function: str, weights: str | Path | None = None, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """Import ``path``, call ``function(**kwargs)`` and load ``weights`` into the module it returns.

    Raises:
        FileNotFoundError: the file or the weights do not exist.
        ValueError: the function is missing (the message lists the file's functions), does not return an
            ``nn.Module``, or the weights do not fit the module (missing or unexpected keys are named).
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"model file {str(source)!r} does not exist")
    name = f"edgesplit_user_{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise ValueError(f"{str(source)!r} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free torch.fx tracing look modules up by name
    spec.loader.exec_module(module)
    build = getattr(module, function, None)
    if not callable(build):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == name)
        raise ValueError(f"{str(source)!r} has no function {function!r}; functions defined there: {found}")
    model = build(**dict(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise ValueError(f"{function}() in {str(source)!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"weights {str(weights)!r} hold a {type(state).__name__}, not a state_dict")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"weights {str(weights)!r} do not fit {function}(): missing keys {result.missing_keys},"
                f" unexpected keys {result.unexpected_keys}"
            )
    return model.eval()


def user_model_key(path: str | Path, function: str, weights: str | Path | None) -> str:
    """A cache key over the file's and the weights' contents and the function name."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(function.encode())
    if weights is not None:
        digest.update(Path(weights).read_bytes())
    return digest.hexdigest()[:16]
