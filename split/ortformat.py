"""The edge's graphs in ONNX Runtime's ORT format: what ONNX Runtime Mobile (a reduced-size build) loads.

``export --edge-format ort`` writes, beside each ONNX file the edge runs (segments, exits, the preprocessing graph
when the bundle has one), an ``.ort`` file of the same graph, optimized ahead of time, and one operator
configuration file, :data:`OPERATORS`, listing the operators those graphs need: the input of a reduced build
(``build.sh --minimal_build --include_ops_by_config required_operators.config``). The manifest records them
(:attr:`protos.bundle.Manifest.ort_format`) and the edge then loads the ``.ort`` files.

The conversion is what ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does with its defaults (fixed
optimization style, level ``all``, no target platform): the graph is optimized at level ``all`` without the
NCHWc layout transformer (it makes x86-only graphs) and QDQ nodes stay int8-agnostic, so one file runs on ARM
and x86 alike.

Example:
    >>> bundle = write_ort_format(Bundle.load("bundle/"))     # doctest: +SKIP
    >>> bundle.manifest.ort_format["files"]["segments/seg0.onnx"]  # doctest: +SKIP
    'segments/seg0.ort'
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path, PurePosixPath

import onnxruntime as ort

from protos.bundle import Bundle, write_manifest

__all__ = ["OPERATORS", "OPTIMIZATION", "write_ort_format"]

OPERATORS = "required_operators.config"
"""The operator configuration file's name (the name ``convert_onnx_models_to_ort`` gives it), at the bundle's root."""

OPTIMIZATION = "all"
"""The graph optimization level baked into the ``.ort`` files (without the NCHWc transformer)."""


def _convert(onnx_file: Path, ort_file: Path) -> None:
    """Optimize ``onnx_file`` and save it in ORT format at ``ort_file`` (as the converter does)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(ort_file)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.add_session_config_entry("session.qdqisint8allowed", "0")
    ort.InferenceSession(
        str(onnx_file), options, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"]
    )


def _write_operators(root: Path, ort_files: list[str]) -> None:
    """The operator configuration of ``ort_files``; its header names them relative to ``root`` (so the file, and
    the content hash, do not depend on where the bundle was written)."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs where it wrote, at INFO
    config = root / OPERATORS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # it reads each model with open(...).read()
        create_config_from_models([root / f for f in ort_files], config, False)
    prefix = f"{root.resolve()}/"
    config.write_text("".join(line.replace(prefix, "") for line in config.read_text().splitlines(keepends=True)))


def write_ort_format(bundle: Bundle) -> Bundle:
    """Write ``bundle``'s edge graphs in ORT format and the operator configuration, record them in the manifest
    (content hash restamped) and return the bundle read back. The ONNX files stay: the cloud and older edges use
    them."""
    root, manifest = bundle.root, bundle.manifest
    files: dict[str, str] = {}
    for rel in manifest.edge_files():
        files[rel] = str(PurePosixPath(rel).with_suffix(".ort"))
        _convert(bundle.file(rel), root / files[rel])
    _write_operators(root, list(files.values()))
    record = {"files": files, "operators": OPERATORS, "onnxruntime": ort.__version__, "optimization": OPTIMIZATION}
    write_manifest(root, replace(manifest, ort_format=record))
    return Bundle.load(root)
