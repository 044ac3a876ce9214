"""One ONNX graph from exported segment graphs run one after another: the cloud's fused tail, without exporting
the same modules again.

Segment ``i``'s output and segment ``i + 1``'s input carry the same name (the boundary's, ``b{i + 1}``), so the
graphs join by name; everything else inside segment ``i`` gets the prefix ``s{i}/`` (each segment was exported on
its own, so their internal names collide). Each weight stays in the one segment that has it: no initializer is
copied twice. ONNX Runtime's graph optimizations (fusions, constant folding) run on the whole chain when a session
is created, across the former boundaries too.

Example:
    >>> segments = [onnx.load(f"segments/seg{i}.onnx") for i in range(2, 5)]        # doctest: +SKIP
    >>> onnx.save(chain(segments), "tails/tail2.onnx")                               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import onnx
from onnx import compose, helper

__all__ = ["chain"]


def _check(models: Sequence[onnx.ModelProto]) -> None:
    """Raise ``ValueError`` unless ``models`` form a chain: one input and one output each, joined by name, the
    same opsets."""
    if not models:
        raise ValueError("chain needs at least one graph")
    for i, model in enumerate(models):
        graph = model.graph
        if len(graph.input) != 1 or len(graph.output) != 1:
            counts = f"{len(graph.input)} inputs and {len(graph.output)} outputs"
            raise ValueError(f"graph {i} has {counts}; chain needs 1 and 1")
    for i, (a, b) in enumerate(pairwise(models)):
        if a.graph.output[0].name != b.graph.input[0].name:
            raise ValueError(
                f"graph {i} outputs {a.graph.output[0].name!r} but graph {i + 1} reads {b.graph.input[0].name!r}"
            )
        if _opsets(a) != _opsets(b):
            raise ValueError(f"graphs {i} and {i + 1} import different opsets: {_opsets(a)} and {_opsets(b)}")


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {op.domain: op.version for op in model.opset_import}


def _functions(models: Sequence[onnx.ModelProto]) -> list[onnx.FunctionProto]:
    """The models' local functions, each once (the same function twice is kept once; two different ones under
    one name raise ``ValueError``)."""
    found: dict[tuple[str, str, str], onnx.FunctionProto] = {}
    for model in models:
        for function in model.functions:
            key = (function.domain, function.name, function.overload)
            if key in found and found[key] != function:
                raise ValueError(f"two different local functions named {key}")
            found[key] = function
    return list(found.values())


def _prefixed(graph: onnx.GraphProto, prefix: str) -> onnx.GraphProto:
    """A copy of ``graph`` with ``prefix`` on every name but its input's and output's (and without ``value_info``
    for those two, which would otherwise get the prefix)."""
    part = onnx.GraphProto()
    part.CopyFrom(graph)
    ends = {graph.input[0].name, graph.output[0].name}
    keep = [v for v in part.value_info if v.name not in ends]
    del part.value_info[:]
    part.value_info.extend(keep)
    return compose.add_prefix_graph(part, prefix, rename_inputs=False, rename_outputs=False, inplace=True)


def chain(models: Sequence[onnx.ModelProto], name: str = "chain") -> onnx.ModelProto:
    """One model computing ``models`` one after another: graph ``i``'s output feeds graph ``i + 1``.

    Args:
        models: Graphs with one input and one output each, graph ``i``'s output named like graph ``i + 1``'s
            input, all importing the same opsets.
        name: The composed graph's name.

    Returns:
        A checked model with the first graph's input and the last graph's output (names, types and shapes,
        the dynamic batch dimension included); the boundaries in between are typed ``value_info``.

    Raises:
        ValueError: When ``models`` do not form such a chain.
    """
    _check(models)
    graph = helper.make_graph([], name, [models[0].graph.input[0]], [models[-1].graph.output[0]])
    for i, model in enumerate(models):
        part = _prefixed(model.graph, f"s{i}/")
        graph.node.extend(part.node)
        graph.initializer.extend(part.initializer)
        graph.sparse_initializer.extend(part.sparse_initializer)
        graph.value_info.extend(part.value_info)
        if i < len(models) - 1:
            graph.value_info.append(part.output[0])
    composed = helper.make_model(
        graph,
        opset_imports=list(models[0].opset_import),
        ir_version=max(m.ir_version for m in models),
        functions=_functions(models),
        producer_name="edgesplit",
    )
    onnx.checker.check_model(composed)
    return composed
