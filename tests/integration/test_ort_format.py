"""export --edge-format ort: the edge's graphs in ONNX Runtime's ORT format, the operator configuration, and an
edge that loads them and answers as with the ONNX files (to float tolerance: the ``.ort`` graphs are optimized
without the x86-only NCHWc layout, the ONNX ones with it at load on x86, so the kernels differ)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge.runtime import EdgeRuntime
from protos.bundle import MANIFEST, Bundle, BundleError
from split.ortformat import OPERATORS, write_ort_format


def _ort_copy(bundle: Bundle, tmp_path: Path) -> Bundle:
    shutil.copytree(bundle.root, tmp_path / "b")
    return write_ort_format(Bundle.load(tmp_path / "b"))


def _answers_equal(onnx_runtime: EdgeRuntime, ort_runtime: EdgeRuntime, samples) -> None:  # type: ignore[no-untyped-def]
    for x in samples:
        want, got = onnx_runtime.infer(x), ort_runtime.infer(x)
        assert (got.label, got.source, got.exit, got.segments_run) == (
            want.label,
            want.source,
            want.exit,
            want.segments_run,
        )
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-5, atol=1e-6)


def test_the_edge_loads_ort_files_and_answers_as_with_onnx(bundle: Bundle, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mobile = _ort_copy(bundle, tmp_path)
    m = mobile.manifest
    assert set(m.ort_format["files"]) == {s.file for s in m.segments} | {e.file for e in m.exits}
    assert m.ort_format["onnxruntime"] == ort.__version__
    assert all((mobile.root / f).is_file() for f in m.ort_format["files"].values())
    assert m.content_hash != bundle.manifest.content_hash  # the hash covers the .ort files and the config
    n = len(m.segments)
    for exits in (False, True):
        runtime = EdgeRuntime(mobile, split=n, exits=exits)
        assert runtime.segment_session(0)._model_path.endswith(".ort")  # what ONNX Runtime was given
        _answers_equal(EdgeRuntime(bundle, split=n, exits=exits), runtime, digits.x_test[:60])


def test_the_operator_config_lists_what_the_graphs_need(bundle: Bundle, tmp_path: Path) -> None:
    """The config's operators are exactly those of the same graphs optimized the same way, saved as ONNX."""
    mobile = _ort_copy(bundle, tmp_path)
    lines = (mobile.root / OPERATORS).read_text().splitlines()
    assert str(tmp_path) not in "\n".join(lines)  # the header names the files relative to the bundle
    listed = set()
    for line in lines:
        if line.strip() and not line.startswith("#"):
            domain, opset, ops = line.split(";")
            assert int(opset) > 0
            listed |= {(domain, op) for op in ops.split(",")}
    needed = set()
    for rel in mobile.manifest.edge_files():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(mobile.file(rel)), options, disabled_optimizers=["NchwcTransformer"])
        graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
        needed |= {(node.domain or "ai.onnx", node.op_type) for node in graph.node}
    assert listed == needed and ("ai.onnx", "Gemm") in listed


def test_bundles_without_ort_files_are_written_as_before(bundle: Bundle) -> None:
    data = json.loads((bundle.root / MANIFEST).read_text())
    assert "ort_format" not in data and bundle.manifest.ort_format == {}
    assert bundle.manifest.edge_file("segments/seg0.onnx") == "segments/seg0.onnx"


def test_a_bad_ort_record_is_refused(bundle: Bundle) -> None:
    data = json.loads((bundle.root / MANIFEST).read_text())
    from protos.bundle import Manifest

    for record, message in (
        ({"files": {"tails/tail1.onnx": "tails/tail1.ort"}, "operators": OPERATORS}, "not edge graphs"),
        ({"files": {"segments/seg0.onnx": "segments/seg0.onnx"}, "operators": OPERATORS}, "end in .ort"),
        ({"files": {"segments/seg0.onnx": "segments/seg0.ort"}}, "operators"),
    ):
        with pytest.raises(BundleError, match=message):
            Manifest.from_dict({**data, "ort_format": record})


def test_preprocessing_too(image_bundle: Bundle, rgb_digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, frames = rgb_digits
    mobile = _ort_copy(image_bundle, tmp_path)
    graph = mobile.manifest.preprocessing["graph"]
    assert mobile.manifest.ort_format["files"][graph].endswith(".ort")
    n = len(mobile.manifest.segments)
    runtime = EdgeRuntime(mobile, split=n)
    assert runtime.inputs.preprocessor is not None
    assert runtime.inputs.preprocessor._session._model_path.endswith(".ort")
    _answers_equal(EdgeRuntime(image_bundle, split=n), runtime, frames["test"][:20])


def test_export_cli_writes_ort_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from split.cli import main

    out = tmp_path / "bundle"
    args = ["export", "--out", str(out), "--width", "0.25", "--epochs", "1", "--edge-format", "ort"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    m = Bundle.load(out).manifest
    assert (out / OPERATORS).is_file() and len(m.ort_format["files"]) == len(m.segments) + len(m.exits)
    assert "ORT format" in capsys.readouterr().out
    assert main(["export", "--out", str(tmp_path / "t"), "--format", "triton", "--from-bundle", str(out),
                 "--edge-format", "ort"]) != 0  # fmt: skip
    assert "--edge-format ort goes with making a bundle" in capsys.readouterr().err
