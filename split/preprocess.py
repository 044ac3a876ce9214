"""Write a bundle's preprocessing graph (:mod:`protos.preprocessing` says what it computes), and apply its
geometric part at training time.

Training stores each image as the uint8 crop the graph's resize-and-crop makes (:func:`crop_graph`, run in ONNX
Runtime), and normalises batches with :meth:`~protos.preprocessing.Preprocessing.normalize`; the bundle's graph
(:func:`preprocess_graph`) is the same resize-and-crop followed by the same normalisation, so what the edge
feeds the model equals what training fed it.

Example:
    >>> spec = Preprocessing(resize=256, crop=224)
    >>> onnx.save(preprocess_graph(spec), "bundle/preprocess.onnx")     # doctest: +SKIP
    >>> crops = Cropper(spec)(frames)                                   # uint8 [N, 224, 224, 3]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos.preprocessing import FRAME, Preprocessing, frames_of, graph_session

__all__ = ["OPSET", "Cropper", "crop_graph", "preprocess_graph", "write_preprocessing"]

OPSET = 18
"""ONNX ``Resize`` takes ``antialias`` from opset 18."""


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _i64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _resize_nodes(spec: Preprocessing) -> list[onnx.NodeProto]:
    """frame uint8 NHWC -> ``resized`` float NCHW: the shorter side to ``spec.resize``, rounded, 0..255."""
    n = helper.make_node
    return [
        _const("k_size", _i64(spec.resize)),
        _const("k_0_2", _i64(0)), _const("k_2", _i64(2)), _const("k_4", _i64(4)),
        _const("k_0f", np.asarray(0, np.float32)), _const("k_255f", np.asarray(255, np.float32)),
        n("Cast", [FRAME], ["x_float"], to=TensorProto.FLOAT),
        n("Transpose", ["x_float"], ["x_nchw"], perm=[0, 3, 1, 2]),
        n("Shape", ["x_nchw"], ["shape"]),
        n("Slice", ["shape", "k_0_2", "k_2"], ["n_c"]),
        n("Slice", ["shape", "k_2", "k_4"], ["hw"]),
        n("ReduceMin", ["hw"], ["short"], keepdims=1),
        n("Mul", ["hw", "k_size"], ["hw_scaled"]),
        n("Div", ["hw_scaled", "short"], ["new_hw"]),  # integer division: resize * side // short
        n("Concat", ["n_c", "new_hw"], ["sizes"], axis=0),
        n("Resize", ["x_nchw", "", "", "sizes"], ["x_resized"], mode="linear", antialias=1,
          coordinate_transformation_mode="half_pixel"),
        n("Round", ["x_resized"], ["x_round"]),
        n("Clip", ["x_round", "k_0f", "k_255f"], ["resized"]),
    ]  # fmt: skip


def _crop_nodes(spec: Preprocessing) -> list[onnx.NodeProto]:
    """``resized`` -> ``cropped``: the centre ``spec.crop`` square, offsets ``round((side - crop) / 2)``."""
    n = helper.make_node
    return [
        _const("k_crop", _i64(spec.crop)),
        _const("k_half", np.asarray(0.5, np.float32)),
        _const("k_axes", _i64(2, 3)),
        n("Sub", ["new_hw", "k_crop"], ["margin"]),
        n("Cast", ["margin"], ["margin_f"], to=TensorProto.FLOAT),
        n("Mul", ["margin_f", "k_half"], ["offset_f"]),
        n("Round", ["offset_f"], ["offset_r"]),  # half to even, as Python's round() in torchvision
        n("Cast", ["offset_r"], ["start"], to=TensorProto.INT64),
        n("Add", ["start", "k_crop"], ["end"]),
        n("Slice", ["resized", "start", "end", "k_axes"], ["cropped"]),
    ]


def _graph(spec: Preprocessing, nodes: list[onnx.NodeProto], output: str, dtype: int, name: str) -> onnx.ModelProto:
    frame = helper.make_tensor_value_info(FRAME, TensorProto.UINT8, ["N", "H", "W", 3])
    out = helper.make_tensor_value_info(output, dtype, ["N", 3, spec.crop, spec.crop])
    graph = helper.make_graph(nodes, name, [frame], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgesplit")
    onnx.checker.check_model(model, full_check=True)
    return model


def preprocess_graph(spec: Preprocessing, output: str = "input") -> onnx.ModelProto:
    """The bundle's graph: frame uint8 ``[N, H, W, 3]`` -> ``output`` float32 ``[N, 3, crop, crop]``."""
    a, b = spec.affine
    nodes = _resize_nodes(spec) + _crop_nodes(spec)
    nodes += [
        _const("k_a", a.reshape(1, 3, 1, 1)),
        _const("k_b", b.reshape(1, 3, 1, 1)),
        helper.make_node("Mul", ["cropped", "k_a"], ["scaled"]),
        helper.make_node("Add", ["scaled", "k_b"], [output]),
    ]
    return _graph(spec, nodes, output, TensorProto.FLOAT, "edgesplit_preprocess")


def crop_graph(spec: Preprocessing) -> onnx.ModelProto:
    """The geometric part alone: frame uint8 NHWC -> uint8 ``[N, 3, crop, crop]`` (what training stores)."""
    nodes = [*_resize_nodes(spec), *_crop_nodes(spec), helper.make_node("Cast", ["cropped"], ["crop"], to=2)]
    return _graph(spec, nodes, "crop", TensorProto.UINT8, "edgesplit_crop")


def write_preprocessing(spec: Preprocessing, bundle_dir: Path, output: str = "input") -> None:
    """Write ``spec``'s graph into the bundle directory (at ``spec.graph``)."""
    path = bundle_dir / spec.graph
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(preprocess_graph(spec, output), str(path))


class Cropper:
    """:func:`crop_graph` in an ONNX Runtime session: frames -> uint8 crops ``[N, crop, crop, 3]`` (NHWC)."""

    def __init__(self, spec: Preprocessing, threads: int = 1) -> None:
        self.spec = spec
        self._session = graph_session(crop_graph(spec).SerializeToString(), threads)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` or ``[N, H, W, 3]`` (one size) -> uint8 crops ``[N, crop, crop, 3]``."""
        crops = self._session.run(None, {FRAME: frames_of(frames)})[0]
        return np.ascontiguousarray(crops.transpose(0, 2, 3, 1))
