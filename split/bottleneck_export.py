"""Add learned bottlenecks (:mod:`split.bottleneck`) to an exported bundle: train (cached), export, record.

Per bottleneck at split point ``s`` the bundle gains ``bottlenecks/enc{s}.onnx`` (edge: the boundary tensor ->
the code, ``{boundary}_code``; on an int8 edge it reads the uint8 boundary and dequantizes it first) and
``bottlenecks/dec{s}.onnx`` (cloud: the code -> the boundary tensor, which the split point's own fp32 tail then
takes: :mod:`cloud.bottleneck`) with its variant per wire format (``bottlenecks/dec{s}.{format}.onnx``, a few KB
each). The manifest records them in the split point's ``bottleneck``; the split point's plain tails stay, so a route
can take it with or without.

Example:
    >>> bundle = add_bottlenecks(bundle, net, data.x_train, [BottleneckSpec(2, 4)])        # doctest: +SKIP
    >>> bundle.manifest.bottleneck(2).code.shape                                           # doctest: +SKIP
    (-1, 4, 4, 4)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from protos.bundle import WIRE_FORMATS, Bottleneck, Bundle, BundleError, TensorSpec, content_hash, write_manifest
from split.bottleneck import BottleneckConfig, BottleneckSpec, Coder, train_bottleneck
from split.export import export_onnx
from split.graphs import compact
from split.partition import SplitNet
from split.wire import write_tail_variant

__all__ = ["add_bottlenecks", "trained_coder"]


def _key(bundle: Bundle, spec: BottleneckSpec, config: BottleneckConfig, n_samples: int) -> str:
    """What identifies a trained coder: the bundle's segments (the frozen backbone), the spec, the config."""
    m = bundle.manifest
    segments = content_hash(bundle.root, [s.file for s in m.segments])
    blob = json.dumps([segments, asdict(spec), asdict(config), n_samples, torch.__version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_coder(
    bundle: Bundle,
    net: SplitNet,
    x: Any,
    spec: BottleneckSpec,
    config: BottleneckConfig,
    cache: Path | None = None,
    progress: bool = True,
) -> tuple[Coder, dict[str, Any]]:
    """The coder for ``spec`` trained on ``x`` (from ``cache`` when it holds one); (coder, training report)."""
    channels = int(bundle.manifest.split_point(spec.split).tensor.shape[1])
    path = None
    if cache is not None:
        path = cache / "models" / f"bottleneck-{bundle.manifest.model}-{_key(bundle, spec, config, len(x))}"
        if path.with_suffix(".pt").is_file() and path.with_suffix(".json").is_file():
            coder = Coder(channels, spec)
            coder.load_state_dict(torch.load(path.with_suffix(".pt"), weights_only=True))
            report = json.loads(path.with_suffix(".json").read_text())
            return coder.eval(), {**report, "cached": True}
    coder, report = train_bottleneck(net, x, spec, config, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(coder.state_dict(), path.with_suffix(".pt"))
        path.with_suffix(".json").write_text(json.dumps(report))
    return coder, {**report, "cached": False}


def _dequantizing(model: onnx.ModelProto, boundary: TensorSpec) -> onnx.ModelProto:
    """``model`` reading the uint8 boundary of an int8 edge: a DequantizeLinear (its scale and zero point
    constants) in front of the float32 graph."""
    graph = model.graph
    (source,) = graph.input
    name, real = source.name, f"{source.name}__real"
    for node in graph.node:
        node.input[:] = [real if i == name else i for i in node.input]
    dims = [d.dim_param or d.dim_value for d in source.type.tensor_type.shape.dim]
    graph.ClearField("input")
    graph.input.append(helper.make_tensor_value_info(name, TensorProto.UINT8, dims))
    graph.initializer.extend([
        numpy_helper.from_array(np.array(boundary.scale, np.float32), f"{name}__scale"),
        numpy_helper.from_array(np.array(boundary.zero_point, np.uint8), f"{name}__zero_point"),
    ])  # fmt: skip
    nodes = [helper.make_node("DequantizeLinear", [name, f"{name}__scale", f"{name}__zero_point"], [real]),
             *graph.node]  # fmt: skip
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def _export(bundle: Bundle, coder: Coder, report: dict[str, Any], codec: str) -> Bottleneck:
    """Write the encoder and the decoder (its variant per wire format) of ``coder``; their record."""
    m, root, spec = bundle.manifest, bundle.root, coder.spec
    sp = m.split_point(spec.split)
    name, shape = sp.tensor.name, sp.tensor.sample_shape
    code_name = f"{name}_code"
    with torch.no_grad():
        code_shape = tuple(coder.encoder(torch.zeros(1, *shape)).shape[1:])
    encoder = f"bottlenecks/enc{spec.split}.onnx"
    export_onnx(coder.encoder, shape, root / encoder, name, code_name)
    model = compact(onnx.load(str(root / encoder)))
    boundary = m.segments[spec.split].input
    if boundary.quantized:  # an int8 edge hands the encoder the uint8 tensor it hands the next segment
        model = _dequantizing(model, boundary)
    onnx.save(model, str(root / encoder))
    decoders = {"fp32": f"bottlenecks/dec{spec.split}.onnx"}
    export_onnx(coder.decoder, code_shape, root / decoders["fp32"], code_name, name)
    onnx.save(compact(onnx.load(str(root / decoders["fp32"]))), str(root / decoders["fp32"]))
    for fmt in WIRE_FORMATS[1:]:
        decoders[fmt] = f"bottlenecks/dec{spec.split}.{fmt}.onnx"
        write_tail_variant(root / decoders["fp32"], fmt, root / decoders[fmt])
    code = TensorSpec(code_name, (-1, *code_shape))
    return Bottleneck(spec.channels, encoder, code, decoders, codec, spec.stride, report)


def add_bottlenecks(
    bundle: Bundle,
    net: SplitNet,
    x: Any,
    specs: Sequence[BottleneckSpec],
    config: BottleneckConfig | None = None,
    *,
    codec: str = "int8",
    cache: Path | None = None,
    progress: bool = True,
) -> Bundle:
    """Train a bottleneck per spec on the samples ``x`` (the training split; no labels), write it into the
    bundle directory and its manifest; the reloaded bundle. ``codec``: the default codec of the code."""
    config = config or BottleneckConfig()
    m = bundle.manifest
    n = len(m.segments)
    splits = [s.split for s in specs]
    if len(set(splits)) != len(splits):
        raise ValueError(f"one bottleneck per split point; asked for {splits}")
    for spec in specs:
        m.split_point(spec.split)  # BundleError listing the split points
        if not 1 <= spec.split < n:
            raise BundleError(f"a bottleneck sits between two segments: split points 1..{n - 1}, not {spec.split}")
    points = {sp.index: sp for sp in m.split_points}
    for spec in specs:
        coder, report = trained_coder(bundle, net, x, spec, config, cache, progress)
        points[spec.split] = replace(points[spec.split], bottleneck=_export(bundle, coder, report, codec))
    manifest = replace(m, split_points=tuple(points[k] for k in sorted(points)))
    write_manifest(bundle.root, manifest)
    return Bundle.load(bundle.root)
