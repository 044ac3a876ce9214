"""The reference model that named devices are defined by (:mod:`edge.devices`), exported to ONNX once and cached.

MobileNetV2 width 1.0 at 224x224 with 1000 classes, as the published device latencies measured it. Latency does
not depend on the weights, so the net is built with its initial weights (no download); it is exported at batch 1
and cached as ``<cache>/reference/mobilenet_v2_224.onnx`` (``$EDGESPLIT_CACHE``, else ``~/.cache/edgesplit``).

Example:
    >>> ms = host_reference_ms(threads=1)          # doctest: +SKIP
    >>> factor = emulation_factor(device("rpi4").reference_ms(1), ms)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch

from edge.devices import REFERENCE_INPUT, measure_reference_ms
from split.export import export_onnx
from split.models.mobilenet_v2 import ImageNetMobileNetV2
from split.pipeline import default_cache_dir

__all__ = ["host_reference_ms", "reference_onnx"]

_FILE = "mobilenet_v2_224.onnx"


def reference_onnx(cache_dir: Path | None = None) -> Path:
    """The reference model's ONNX file, exported on first use."""
    path = (cache_dir or default_cache_dir()) / "reference" / _FILE
    if not path.is_file():
        torch.manual_seed(0)
        net = ImageNetMobileNetV2(3, 1000, width=1.0, image_size=224).eval()
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(net, REFERENCE_INPUT[1:], tmp, "x", "logits")
        tmp.replace(path)  # another process never sees a half-written file
    return path


def host_reference_ms(threads: int = 1, runs: int = 21, cache_dir: Path | None = None) -> float:
    """This host's median ms for the reference model in ONNX Runtime with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(reference_onnx(cache_dir)), options, providers=["CPUExecutionProvider"])
    return measure_reference_ms(session, runs=runs)
