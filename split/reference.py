"""The reference model that named devices are defined by (:mod:`edge.devices`), exported to ONNX once and cached.

MobileNetV2 width 1.0 at 224x224 with 1000 classes, as the published CPU latencies measured it; MobileNetV1 0.25
at 96x96 with 2 classes for a microcontroller (MLPerf Tiny's Visual Wake Words model). Latency does not depend on
the weights, so each net is built with its initial weights (no download); it is exported at batch 1 and cached as
``<cache>/reference/KEY.onnx`` (``$EDGESPLIT_CACHE``, else ``~/.cache/edgesplit``).

Example:
    >>> ms = host_reference_ms(threads=1)          # doctest: +SKIP
    >>> factor = emulation_factor(device("rpi4").reference_ms(1), ms)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from edge.devices import REFERENCE_MODELS, measure_reference_ms
from split.export import export_onnx
from split.models.mobilenet_v1 import MobileNetV1
from split.models.mobilenet_v2 import ImageNetMobileNetV2
from split.pipeline import default_cache_dir

__all__ = ["host_reference_ms", "reference_onnx"]


def _build(key: str) -> tuple[nn.Module, tuple[int, int, int]]:
    if key == "mobilenet_v2_224":
        return ImageNetMobileNetV2(3, 1000, width=1.0, image_size=224), (3, 224, 224)
    if key == "mobilenet_v1_025_96":  # MLPerf Tiny's VWW model: 8 channels after the stem, 256 before the head
        return MobileNetV1(3, 2, width=0.25, image_size=96), (3, 96, 96)
    raise ValueError(f"unknown reference model {key!r}; valid: {', '.join(REFERENCE_MODELS)}")


def reference_onnx(cache_dir: Path | None = None, key: str = "mobilenet_v2_224") -> Path:
    """The reference model's ONNX file, exported on first use."""
    path = (cache_dir or default_cache_dir()) / "reference" / f"{key}.onnx"
    if not path.is_file():
        torch.manual_seed(0)
        net, shape = _build(key)
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(net.eval(), shape, tmp, "x", "logits")
        tmp.replace(path)  # another process never sees a half-written file
    return path


def host_reference_ms(
    threads: int = 1, runs: int = 21, cache_dir: Path | None = None, key: str = "mobilenet_v2_224"
) -> float:
    """This host's median ms for the reference model ``key`` in ONNX Runtime with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    path = reference_onnx(cache_dir, key)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return measure_reference_ms(session, runs=runs)
