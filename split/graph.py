"""Find where a model can be cut: the boundaries of its traced graph that exactly one tensor crosses.

The model is traced with ``torch.fx``; nodes are in execution order. A cut after node ``i`` is crossed by every
value made at or before ``i`` and used after it (parameters and constants are re-created on either side, so
they do not count). A boundary is a valid split point when exactly one tensor crosses it: inside a residual
block the skip connection crosses too, inside a fire module both expand branches do, so those are refused. A
single value that is not one tensor (the tuple ``chunk`` returns) is refused too.

Boundaries are named by the outermost module whose last node is the cut (``layer2``, ``features.3``), else by the
node's module path or fx name (``layer2.0.relu``, ``add_3``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

__all__ = ["Boundary", "boundaries", "resolve", "segment_modules", "trace"]


@dataclass(frozen=True)
class Boundary:
    """A cut after node ``position`` that one tensor (``node``) crosses, with its per-sample shape."""

    name: str
    aliases: tuple[str, ...]
    position: int
    node: str
    shape: tuple[int, ...]


def trace(model: nn.Module, sample_shape: Sequence[int]) -> fx.GraphModule:
    """Symbolically trace ``model`` and record every node's output shape for a batch of two samples."""
    gm = fx.symbolic_trace(model.eval())
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(2, *sample_shape))
    return gm


def _crossing(nodes: list[fx.Node]) -> list[list[fx.Node]]:
    """For each cut after node ``i``: the values made at or before ``i`` and used after it."""
    index = {n: i for i, n in enumerate(nodes)}
    index.update({u: len(nodes) for n in nodes for u in n.users if u.op == "output"})
    last_use = {n: max((index[u] for u in n.users), default=-1) for n in nodes}
    crossing: list[list[fx.Node]] = []
    for i in range(len(nodes)):
        live = [n for n in nodes[: i + 1] if n.op != "get_attr" and last_use[n] > i]
        crossing.append(live)
    return crossing


def _names(node: fx.Node, ends: dict[str, fx.Node]) -> tuple[str, ...]:
    """Module paths that end at ``node`` (outermost first), then the node's own module path or fx name."""
    stack = list(node.meta.get("nn_module_stack", {}))
    names = [path for path in stack if ends.get(path) is node]
    own = str(node.target) if node.op == "call_module" else node.name
    return tuple(dict.fromkeys([*names, own]))


def boundaries(gm: fx.GraphModule) -> list[Boundary]:
    """Every valid split point of a traced model, in execution order (the input and the output excluded)."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    ends: dict[str, fx.Node] = {}
    for n in nodes:
        for path in n.meta.get("nn_module_stack", {}):
            ends[path] = n
    found = []
    for i, live in enumerate(_crossing(nodes)):
        if nodes[i].op == "placeholder" or len(live) != 1:
            continue
        if not isinstance(live[0].meta.get("tensor_meta"), TensorMetadata):  # e.g. the tuple ``chunk`` returns
            continue
        if not any(u.op != "output" for u in live[0].users) or live[0] is not nodes[i]:
            continue
        names = _names(nodes[i], ends)
        found.append(Boundary(names[0], names, i, live[0].name, tuple(live[0].meta["tensor_meta"].shape[1:])))
    return found


def resolve(points: Sequence[Boundary], wanted: Sequence[str], gm: fx.GraphModule) -> list[Boundary]:
    """The boundaries called ``wanted`` (any alias), in order; ``ValueError`` listing the valid names otherwise."""
    by_name = {alias: b for b in points for alias in b.aliases}
    chosen = []
    for name in wanted:
        if name not in by_name:
            hint = _why_invalid(gm, name)
            raise ValueError(
                f"{name!r} is not a valid split point{hint}; valid split points: {[b.name for b in points]}"
            )
        chosen.append(by_name[name])
    positions = [b.position for b in chosen]
    if positions != sorted(set(positions)):
        raise ValueError(f"split points must be distinct and in execution order, got {list(wanted)}")
    return chosen


def _matches(node: fx.Node, name: str) -> bool:
    return name in (node.name, str(node.target)) or name in node.meta.get("nn_module_stack", {})


def _why_invalid(gm: fx.GraphModule, name: str) -> str:
    """Why ``name`` cannot be a split point, if it names a place in the graph at all."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    hits = [i for i, n in enumerate(nodes) if _matches(n, name)]
    if not hits:
        return " (no module or node has that name)"
    crossing = _crossing(nodes)[hits[-1]]
    live = [n.name for n in crossing]
    if len(crossing) == 1 and not isinstance(crossing[0].meta.get("tensor_meta"), TensorMetadata):
        return f" (the value crossing that boundary, {live[0]}, is not a single tensor)"
    return f" ({len(live)} tensors cross that boundary: {live})"


def segment_modules(gm: fx.GraphModule, cuts: Sequence[Boundary]) -> list[fx.GraphModule]:
    """Slice the traced model at ``cuts`` into ``len(cuts) + 1`` chained modules sharing the original parameters."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    (result,) = next(n for n in gm.graph.nodes if n.op == "output").args
    starts = [0, *(c.position + 1 for c in cuts)]
    inputs = [nodes[0], *(_node(nodes, c.node) for c in cuts)]
    outputs = [*(_node(nodes, c.node) for c in cuts), result]
    ends = [*(c.position + 1 for c in cuts), len(nodes)]
    return [_slice(gm, nodes[a:b], src, dst) for a, b, src, dst in zip(starts, ends, inputs, outputs, strict=True)]


def _node(nodes: list[fx.Node], name: str) -> fx.Node:
    return next(n for n in nodes if n.name == name)


def _slice(gm: fx.GraphModule, body: list[fx.Node], source: fx.Node, result: fx.Node) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {source: graph.placeholder("x")}

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:  # a constant or parameter made outside this slice: re-create it here
            assert n.op == "get_attr", f"{n.name} crosses into a segment but is not its input"
            env[n] = graph.node_copy(n, lookup)
        return env[n]

    for n in body:
        if n is not source and n.op != "placeholder":
            env[n] = graph.node_copy(n, lookup)
    graph.output(lookup(result))
    segment = fx.GraphModule(gm, graph)
    segment.graph.eliminate_dead_code()
    segment.recompile()
    return segment
