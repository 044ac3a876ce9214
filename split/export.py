"""Export a trained :class:`SplitNet` as a bundle: ONNX segments, exits and fused tails, plus the manifest."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from protos.bundle import (
    EDGE_PRECISIONS,
    IMAGE_FORMATS,
    WIRE_FORMATS,
    Exit,
    Manifest,
    Segment,
    SplitPoint,
    TensorSpec,
    write_manifest,
)
from protos.codecs import Codec
from protos.preprocessing import Preprocessing
from split.calibrate import Calibration
from split.chain import chain
from split.graphs import compact, strip_metadata
from split.partition import ModelConfig, SplitNet
from split.preprocess import write_preprocessing
from split.quantize import quantize_edge
from split.wire import write_tail_variant

__all__ = ["boundary_name", "export_bundle", "export_onnx", "with_calibration"]


def boundary_name(index: int, n_segments: int) -> str:
    """The tensor name at boundary ``index``: ``input``, ``b1`` … ``b{n-1}``, ``logits``."""
    if index == 0:
        return "input"
    return "logits" if index == n_segments else f"b{index}"


def export_onnx(
    module: nn.Module, sample_shape: tuple[int, ...], path: Path, input_name: str, output_name: str
) -> None:
    """Export ``module`` to ONNX with a dynamic batch dimension (torch.export-based exporter, quietly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, *sample_shape),)
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter prints progress, logs that torchvision is absent and warns about its own internals.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
        )
    onnx.save(strip_metadata(onnx.load(str(path))), str(path))


def _spec(name: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, (-1, *shape), "FP32")


def export_bundle(
    net: SplitNet,
    config: ModelConfig,
    out: Path,
    *,
    model_name: str,
    classes: tuple[str, ...],
    default_split: int,
    calibration: Calibration | None = None,
    criterion: str = "max_softmax",
    preprocessing: Mapping[str, Any] | None = None,
    codec: str = "fp32",
    edge_precision: str = "fp32",
    calibration_inputs: np.ndarray | None = None,
) -> Manifest:
    """Write the bundle directory ``out`` (replacing it) and return its stamped manifest.

    Files: ``segments/seg{i}.onnx`` (edge), ``exits/{name}.onnx`` (edge), ``tails/tail{k}.onnx`` (cloud: the
    segments from ``k`` on, chained into one graph (:mod:`split.chain`), for every split point ``k`` that offloads) and
    ``tails/tail{k}.{format}.onnx`` taking each other wire format. ``codec`` is the edge's default codec. With
    image ``preprocessing``, split point 0 also takes the frame as JPEG or PNG (``images``: the cloud decodes it
    and runs ``preprocess.onnx`` before the fp32 tail).
    ``edge_precision="int8"`` quantizes the segments and exits (:mod:`split.quantize`), calibrated on
    ``calibration_inputs`` (model inputs); the tails stay float32.
    """
    Codec.parse(codec)
    _check_precision(edge_precision, calibration_inputs)
    net.eval()
    n = len(net.segments)
    shapes = net.boundary_shapes(config.input_shape)
    specs = [_spec(boundary_name(i, n), shapes[i]) for i in range(n + 1)]
    if out.exists():
        shutil.rmtree(out)
    segments = []
    for i, module in enumerate(net.segments):
        segments.append(Segment(i, f"segments/seg{i}.onnx", specs[i], specs[i + 1]))
        export_onnx(module, shapes[i], out / segments[-1].file, specs[i].name, specs[i + 1].name)
    exits = []
    for k, (after, head) in enumerate(zip(net.exit_positions, net.exits, strict=True)):
        name = f"exit{k}"
        exits.append(Exit(name, after, f"exits/{name}.onnx", criterion))
        export_onnx(head, shapes[after + 1], out / exits[-1].file, specs[after + 1].name, f"{name}_logits")
    graphs = [onnx.load(str(out / s.file)) for s in segments]  # before compaction: the tails keep the names
    split_points = []
    images = IMAGE_FORMATS if Preprocessing.from_manifest(preprocessing or {}) is not None else ()
    for k in range(n + 1):
        tails = _write_tails(out, graphs, k) if k < n else {}
        name = "input" if k == 0 else ("output" if k == n else net.boundary_names[k - 1])
        split_points.append(SplitPoint(k, name, specs[k], codec, tails, images=images if k == 0 else ()))
    _finish_device_graphs(out, [s.file for s in segments] + [e.file for e in exits], preprocessing, specs[0].name)
    manifest = Manifest(
        model=model_name,
        family=config.family,
        classes=classes,
        input=specs[0],
        output=specs[n],
        segments=tuple(segments),
        exits=tuple(exits),
        split_points=tuple(split_points),
        default_split=default_split,
        preprocessing=dict(preprocessing or {}),
        edge_precision=edge_precision,
    )
    if calibration_inputs is not None and edge_precision == "int8":  # checked above: int8 has them
        manifest = quantize_edge(out, manifest, calibration_inputs)
    if calibration is not None:
        manifest = manifest.with_thresholds(calibration.thresholds, _calibration_stats(calibration))
    return write_manifest(out, manifest)


def _write_tails(out: Path, segments: list[onnx.ModelProto], k: int) -> dict[str, str]:
    """Write split point ``k``'s fused tail (segments ``k`` on, chained into one graph) and its variant per wire
    format; returns their files by format."""
    tails = {"fp32": f"tails/tail{k}.onnx"}
    (out / tails["fp32"]).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(chain(segments[k:], name=f"tail{k}"), str(out / tails["fp32"]))
    for fmt in WIRE_FORMATS[1:]:
        tails[fmt] = f"tails/tail{k}.{fmt}.onnx"
        write_tail_variant(out / tails["fp32"], fmt, out / tails[fmt])
    return tails


def _finish_device_graphs(
    out: Path, files: list[str], preprocessing: Mapping[str, Any] | None, input_name: str
) -> None:
    """Compact the device's graphs; write the preprocessing graph when the bundle takes frames and images."""
    for rel in files:
        onnx.save(compact(onnx.load(str(out / rel))), str(out / rel))
    frame = Preprocessing.from_manifest(preprocessing or {})
    if frame is not None:
        write_preprocessing(frame, out, input_name)


def with_calibration(out: Path, manifest: Manifest, calibration: Calibration) -> Manifest:
    """Rewrite the bundle ``out``'s manifest with new thresholds and statistics; returns the stamped copy."""
    return write_manifest(out, manifest.with_thresholds(calibration.thresholds, _calibration_stats(calibration)))


def _check_precision(edge_precision: str, calibration_inputs: np.ndarray | None) -> None:
    if edge_precision not in EDGE_PRECISIONS:
        raise ValueError(f"edge precision {edge_precision!r} is not one of {EDGE_PRECISIONS}")
    if edge_precision == "int8" and calibration_inputs is None:
        raise ValueError("an int8 edge needs calibration_inputs (e.g. the calibration split's inputs)")


def _calibration_stats(cal: Calibration) -> dict[str, dict[str, Any]]:
    summary = {
        "budget": cal.budget,
        **cal.extra,
        "accuracy_full": cal.accuracy_full,
        "accuracy_hybrid": cal.accuracy_hybrid,
    }
    return {name: {**stats, **summary} for name, stats in cal.stats.items()}
