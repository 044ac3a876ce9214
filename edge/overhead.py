"""The edge's own cost: :meth:`EdgeRuntime.infer` against the bare ONNX Runtime sessions it runs.

Both sides run the same :class:`onnxruntime.InferenceSession` objects (the runtime's own) on the same input: the
bare side calls them back to back, the segments the request ran and the exit heads it evaluated, with nothing
else; the other side is ``runtime.infer(x)``. They run interleaved, round after round, so a slow spell of a shared
machine hits both alike; each figure is the median. The difference is the Python per request: input checks,
routing, exit scoring, the :class:`~edge.runtime.Answer`, the counters.

The runtime is edge-only (every segment on the device, no cloud), so no network is measured.

Example:
    >>> edge_overhead(Bundle.load("bundle/"), x_test[:1], repeats=2000)    # doctest: +SKIP
    {'bare_us': 112.4, 'infer_us': 120.9, 'ratio': 1.076, 'overhead_us': 8.5, 'exits': False, ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge.runtime import EdgeRuntime
from protos.bundle import Bundle

__all__ = ["edge_overhead", "interleaved_us"]


def interleaved_us(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 50) -> dict[str, float]:
    """Median microseconds of each function, run in turn round after round (after ``warmup`` rounds); every other
    round runs them in reverse order, so that none always follows the same neighbour (what ran just before changes
    what is in the caches)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    orders = (list(fns.items()), list(fns.items())[::-1])
    clock = time.perf_counter
    for r in range(repeats):
        for name, fn in orders[r % 2]:
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: 1e6 * float(np.median(t)) for name, t in times.items()}


def _bare(runtime: EdgeRuntime, sample: np.ndarray, segments_run: int, exits: bool) -> Callable[[], object]:
    """The runtime's sessions on ``sample``, back to back: segments ``[0, segments_run)`` and, with ``exits``, the
    exit heads after them (the last segment has none: the model's own output answers there)."""
    n = len(runtime.manifest.segments)
    names = [s.input.name for s in runtime.manifest.segments]
    heads = {e.after_segment: e for e in runtime.manifest.exits if exits and e.after_segment + 1 < n}
    steps = []
    for i in range(segments_run):
        head = runtime.exit_session(heads[i].name) if i in heads else None
        steps.append((runtime.segment_session(i), names[i], head, head.get_inputs()[0].name if head else ""))

    def bare() -> object:
        x = sample
        for session, name, head, head_name in steps:
            x = session.run(None, {name: x})[0]
            if head is not None:
                head.run(None, {head_name: x})
        return x

    return bare


def edge_overhead(
    bundle: Bundle, x: Any, repeats: int = 2000, *, exits: bool = False, threads: int = 1
) -> dict[str, Any]:
    """What :meth:`EdgeRuntime.infer` costs beyond its sessions, edge-only, on one model-ready sample ``x``
    (``[1, *sample]`` or ``[*sample]``, made contiguous float32 first; frames and images are not measured here).

    Returns ``bare_us`` and ``infer_us`` (medians of interleaved rounds), ``ratio`` (infer / bare),
    ``overhead_us`` (the difference), ``exits``, ``segments_run`` and ``exit`` (where the request answered,
    ``None``: the full model), ``threads`` and ``repeats``.
    """
    n = len(bundle.manifest.segments)
    runtime = EdgeRuntime(bundle, split=n, exits=exits, threads=threads)
    x = np.ascontiguousarray(x, dtype=np.float32)  # as a caller hands it: the runtime then copies nothing
    sample = runtime.inputs.one(x)
    answer = runtime.infer(x)
    fns = {"bare": _bare(runtime, sample, answer.segments_run, exits), "infer": lambda: runtime.infer(x)}
    us = interleaved_us(fns, repeats)
    return {
        "bare_us": us["bare"],
        "infer_us": us["infer"],
        "ratio": us["infer"] / us["bare"],
        "overhead_us": us["infer"] - us["bare"],
        "exits": exits,
        "segments_run": answer.segments_run,
        "exit": answer.exit,
        "threads": threads,
        "repeats": repeats,
    }
