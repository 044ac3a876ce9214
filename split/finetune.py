"""The fine-tuned tail of a transferred backbone: the last N blocks before the classifier, and the classifier.

A family declares its blocks in a class attribute ``block_names``: module paths in execution order, each block
beginning at the module named and reaching to the next (``mobilenet_v2``: ``features.0`` … ``features.18``;
``efficientnet_lite0``: ``_blocks.0`` … ``_blocks.15``, ``_conv_head``). Fine-tuning N blocks cuts the traced
model at the **input of the first fine-tuned block** (the *cut*): the frozen part before it runs once per image
and the tensor there is stored; the :class:`Tail` (an ``fx.GraphModule`` from the cut to the logits, sharing the
module's parameters, hence the :class:`~split.partition.SplitNet`'s) trains on it. Exits read the frozen part
only: N is refused when the cut lies before the last exit's split point, since that exit would read tensors the
fine-tuning changes.

Example:
    >>> tail = fine_tuned_tail(module, net, (3, 224, 224), 2)       # doctest: +SKIP
    >>> tail.module(stored_cut_tensor).shape                         # doctest: +SKIP
    torch.Size([64, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from split.graph import Boundary, boundaries, resolve, segment_modules, trace
from split.partition import SplitNet

__all__ = ["BN_MIN_BATCH", "Tail", "block_names", "fine_tuned_tail", "recorder"]

BN_MIN_BATCH = 16
"""Batch norm in the fine-tuned blocks trains (batch statistics, running statistics updated) on batches of at
least this many samples; with a smaller ``batch_size`` it stays in evaluation mode (the pretrained statistics,
only its scale and shift learn), and the smaller last batch of an epoch is skipped, so a few samples never move
the statistics."""


@dataclass(frozen=True)
class Tail:
    """The fine-tuned part: ``module`` maps the tensor at node ``cut`` of ``graph`` (per-sample ``shape``) to the
    logits; ``blocks``: the fine-tuned blocks' names."""

    graph: fx.GraphModule
    cut: str
    shape: tuple[int, ...]
    module: fx.GraphModule
    blocks: tuple[str, ...]


def block_names(module: nn.Module) -> tuple[str, ...]:
    """The blocks ``module``'s family declares (``block_names``); ``ValueError`` naming the families that do."""
    names = tuple(getattr(module, "block_names", ()))
    if not names:
        from split.models import FAMILIES

        declared = sorted(f for f, cls in FAMILIES.items() if getattr(cls, "block_names", ()))
        raise ValueError(
            f"{type(module).__name__} declares no block_names, so no blocks can be fine-tuned; families that do:"
            f" {declared}"
        )
    return names


def _check_count(module: nn.Module, n: int) -> tuple[str, ...]:
    """The last ``n`` declared blocks; ``ValueError`` with the valid range otherwise."""
    names = block_names(module)
    if not 0 < n <= len(names):
        raise ValueError(
            f"finetune_blocks must be in 0..{len(names)} ({type(module).__name__} has {len(names)} blocks,"
            f" {names[0]} … {names[-1]}; 0: a linear probe), got {n}"
        )
    return names[-n:]


def _first_node(nodes: list[fx.Node], path: str) -> int:
    """The index of the first node of module ``path`` in execution order."""
    for i, node in enumerate(nodes):
        if path in node.meta.get("nn_module_stack", {}):
            return i
    raise ValueError(f"block {path!r} runs no node of the traced model")  # a wrong declaration


def _cut(gm: fx.GraphModule, path: str) -> tuple[fx.Node, Boundary | None]:
    """The node holding block ``path``'s input, and its boundary (``None``: the model's input)."""
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    before = nodes[_first_node(nodes, path) - 1]
    if before.op == "placeholder":
        return before, None
    found = [b for b in boundaries(gm) if b.node == before.name]
    if not found:
        raise ValueError(f"the input of block {path!r} is not a single tensor, so it cannot be stored")
    return before, found[0]


def _check_exits(gm: fx.GraphModule, net: SplitNet, names: tuple[str, ...], n: int, cut: Boundary | None) -> None:
    """Refuse a cut before the last exit's split point (that exit would read what the fine-tuning changes)."""
    if not net.exit_positions:
        return
    last = resolve(boundaries(gm), net.boundary_names, gm)[net.exit_positions[-1]]
    if cut is None or cut.position < last.position:
        nodes = list(gm.graph.nodes)
        allowed = sum(1 for path in names if _first_node(nodes, path) > last.position)
        raise ValueError(
            f"fine-tuning {n} blocks starts at {names[-n]}, before the exit at {last.name}; exits read the frozen"
            f" backbone, so with these exits finetune_blocks must be in 0..{allowed}"
        )


def fine_tuned_tail(module: nn.Module, net: SplitNet, input_shape: tuple[int, ...], n: int) -> Tail:
    """The last ``n`` blocks of ``module`` (which ``net`` was built from) and its classifier, as a :class:`Tail`.

    Raises:
        ValueError: ``n`` outside 0 < n <= the number of blocks, the family declares no blocks, or the cut lies
            before the last exit (each message gives the valid range).
    """
    blocks = _check_count(module, n)
    gm = trace(module, input_shape)
    node, cut = _cut(gm, blocks[0])
    _check_exits(gm, net, block_names(module), n, cut)
    tail = gm if cut is None else segment_modules(gm, [cut])[1]
    shared = {id(p) for p in net.parameters()}
    if any(id(p) not in shared for p in tail.parameters()):  # segments must share the module's parameters
        raise RuntimeError("the fine-tuned tail's parameters are not the SplitNet's; it was built from a copy")
    return Tail(gm, node.name, tuple(node.meta["tensor_meta"].shape[1:]), tail, blocks)


def recorder(gm: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """A module running ``gm`` that returns the values of its nodes ``names`` (a list, in that order)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    graph.graph_copy(gm.graph, env)
    by_name = {old.name: new for old, new in env.items()}
    graph.output([by_name[name] for name in names])
    recording = fx.GraphModule(gm, graph)
    recording.graph.eliminate_dead_code()
    recording.recompile()
    return recording
