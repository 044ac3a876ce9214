"""Export a trained :class:`~split.models.text.TextEncoder` as a text bundle: the tokenizer, ONNX segments (one
encoder layer each), exits and fused tails, all with a dynamic batch and sequence length, and the manifest.

Boundaries: ``input_ids`` (int64 ``[N, L]``) before segment 0, ``h1`` … ``h{depth-1}`` (float32 ``[N, L, d]``)
between layers, ``logits`` after the last (its segment ends with the model's classifier). Every segment and tail
also takes ``attention_mask`` (int64 ``[N, L]``, 0 at padding): the wire carries the hidden states and the mask.
Exit ``e{k}`` reads ``h{k+1}`` (the first token's row). Split point ``k`` sends ``h{k}`` and the mask (``0``:
the token ids, i.e. the text tokenized on the device); its tail takes ``fp32`` and, past 0, ``fp16``.

The manifest's ``preprocessing`` is ``{"kind": "text", "tokenizer": "tokenizer.json", "max_length": L,
"mask": "attention_mask", "policy": {"criterion": "entropy" | "patience", "patience": K}}``; the exits carry
their calibrated entropy thresholds.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from protos.bundle import Exit, Manifest, Segment, SplitPoint, TensorSpec, write_manifest
from protos.texttok import TextTokenizer
from split.graphs import strip_metadata
from split.models.text import TextEncoder

__all__ = ["MASK", "boundary", "export_text_bundle"]

MASK = "attention_mask"
TOKENIZER = "tokenizer.json"


def boundary(index: int, depth: int) -> str:
    """``input_ids``, ``h1`` … ``h{depth-1}``, ``logits``."""
    return "input_ids" if index == 0 else "logits" if index == depth else f"h{index}"


class _Layers(nn.Module):
    """Layers ``[start, stop)``; from 0 it embeds token ids first; to ``depth`` it ends with the classifier."""

    def __init__(self, model: TextEncoder, start: int, stop: int) -> None:
        super().__init__()
        self.model, self.start, self.stop = model, start, stop

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model.embed(x) if self.start == 0 else x
        for layer in self.model.layers[self.start : self.stop]:
            hidden = layer(hidden, mask)
        return self.model.exits[-1](hidden) if self.stop == self.model.depth else hidden


class _Half(nn.Module):
    """A tail that takes float16 hidden states (the fp16 wire format) and computes in float32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float(), mask)


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], output: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch"}
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=False,
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
        )
    onnx.save(strip_metadata(onnx.load(str(path))), str(path))


def _export_segment(
    model: TextEncoder, k: int, specs: list[TensorSpec], example: tuple[torch.Tensor, ...], out: Path
) -> Segment:
    file = f"segments/seg{k}.onnx"
    _export(_Layers(model, k, k + 1), example, [specs[k].name, MASK], specs[k + 1].name, out / file)
    return Segment(k, file, specs[k], specs[k + 1])


def _export_tails(
    model: TextEncoder, k: int, specs: list[TensorSpec], example: tuple[torch.Tensor, ...], out: Path
) -> SplitPoint:
    """The fp32 tail from split point ``k`` and, past 0, the fp16 one."""
    tails = {"fp32": f"tails/tail{k}.onnx"}
    _export(_Layers(model, k, model.depth), example, [specs[k].name, MASK], "logits", out / tails["fp32"])
    if k:
        tails["fp16"] = f"tails/tail{k}.fp16.onnx"
        half = (example[0].half(), example[1])
        _export(_Half(_Layers(model, k, model.depth)), half, [specs[k].name, MASK], "logits", out / tails["fp16"])
    return SplitPoint(k, specs[k].name, specs[k], "fp32", tails)


def export_text_bundle(
    model: TextEncoder,
    tokenizer: TextTokenizer,
    out: Path,
    *,
    model_name: str,
    classes: tuple[str, ...],
    thresholds: Mapping[str, float] | None = None,
    policy: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Mapping[str, Any]] | None = None,
    default_split: int | None = None,
) -> Manifest:
    """Write the text bundle ``out`` (replacing it) and return its stamped manifest (see the module docstring)."""
    model.eval()
    depth, width, length = model.depth, model.width, model.max_length
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer.save(out / TOKENIZER)
    example_len = min(7, length)
    ids = torch.randint(3, 50, (3, example_len))
    mask = torch.ones(3, example_len, dtype=torch.int64)
    hidden = torch.randn(3, example_len, width)
    specs = [TensorSpec("input_ids", (-1, -1), "INT64")]
    specs += [TensorSpec(boundary(i, depth), (-1, -1, width)) for i in range(1, depth)]
    specs.append(TensorSpec("logits", (-1, len(classes))))
    segments, exits, points = [], [], []
    for k in range(depth):
        example = (ids if k == 0 else hidden, mask)
        segments.append(_export_segment(model, k, specs, example, out))
        if k < depth - 1:
            name = f"e{k}"
            _export(model.exits[k], (hidden,), [specs[k + 1].name], "logits", out / f"exits/{name}.onnx")
            threshold = float((thresholds or {}).get(name, -1.0))
            exits.append(
                Exit(name, k, f"exits/{name}.onnx", "entropy", threshold, dict((calibration or {}).get(name, {})))
            )
        points.append(_export_tails(model, k, specs, example, out))
    points.append(SplitPoint(depth, "logits", specs[depth]))
    preprocessing = {
        "kind": "text",
        "tokenizer": TOKENIZER,
        "max_length": length,
        "mask": MASK,
        "policy": dict(policy or {"criterion": "entropy"}),
    }
    manifest = Manifest(
        model=model_name,
        family=model.family,
        classes=tuple(classes),
        input=specs[0],
        output=specs[-1],
        segments=tuple(segments),
        exits=tuple(exits),
        split_points=tuple(points),
        default_split=depth if default_split is None else default_split,
        preprocessing=preprocessing,
    )
    return write_manifest(out, manifest)
