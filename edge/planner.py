"""Choose the split point, wire codec and exit policy that minimise expected end-to-end latency (torch-free).

The cost model is what ``edgesplit profile`` measures and writes into the manifest: per-segment and per-exit
latency on the edge, per-tail latency in the cloud, and per split point and codec the bytes on the wire, the
encode and decode (with (de)serialization) cost and the accuracy. A candidate is (split, codec, exits on/off);
exits use their calibrated thresholds, whose exit rates at each split point the profile records.

Expected latency of a candidate, for a network of bandwidth ``B`` (bits/s) and round-trip time ``rtt``:

* a sample that leaves at exit ``k`` costs the edge segments and exit heads up to that exit;
* a sample that is offloaded costs the edge work up to the split (exit heads passed included), the encode, one
  round trip, ``8 * bytes / B`` for the request and ``8 * response_bytes / B_down`` for the reply, the decode
  and the cloud tail;
* the expectation weighs each by the fraction of samples that takes it;
* on an image bundle profiled with its photos, every route first pays the edge's preprocessing of the frame,
  except an image codec's at split point 0 (``jpeg90``, ``png``): it encodes the frame instead, and the cloud
  decodes and preprocesses it (in its ``decode_ms``).

Expected energy of a candidate (mJ per inference), given an :class:`Energy` (the device's compute power and the
link's radio model, :mod:`edge.energy`): ``compute_w`` times the expected edge compute time (segments, exit heads
and the encode of offloaded samples; waiting for the network is not compute), plus, for the offloaded fraction,
the radio's energy for the request and reply bytes and its per-transfer ramp and tail.

Everything here is a pure function of its inputs: the unit tests check it on cases worked out by hand.

Example:
    >>> costs = CostModel(segment_ms=(1.0, 1.0), exits=(), splits=(
    ...     SplitCost(0, cloud_ms=0.5, wire={"fp32": WireCost(4000, 0.0, 0.0, 0.9)}),
    ...     SplitCost(2, wire={"fp32": WireCost(0, 0.0, 0.0, 0.9)}),
    ... ), accuracy_full=0.9, response_bytes=0)
    >>> [(c.split, round(c.latency_ms, 3)) for c in candidates(costs, Network(8e6, 10.0))]
    [(2, 2.0), (0, 14.5)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge.energy import RadioModel
from protos.bundle import Manifest
from protos.codecs import Codec

__all__ = [
    "BOTTLENECK",
    "OBJECTIVES",
    "TEXT",
    "Candidate",
    "CostModel",
    "Energy",
    "ExitCost",
    "Network",
    "SplitCost",
    "WireCost",
    "best_accuracy_within",
    "candidates",
    "cost_model",
    "expected_energy_mj",
    "expected_latency_ms",
    "plan",
    "tensor_routes",
]


@dataclass(frozen=True)
class Network:
    """Uplink bandwidth (bits/s), round-trip time (ms), downlink bandwidth (bits/s; default: the uplink's) and
    ``overhead_ms``: what one offload costs beyond the round trip, the bytes and the profiled encode, decode and
    tail (request serialisation, gRPC framing, the server's scheduling), measured on the live link."""

    bandwidth_bps: float
    rtt_ms: float
    downlink_bps: float | None = None
    overhead_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.bandwidth_bps <= 0 or self.rtt_ms < 0 or (self.downlink_bps is not None and self.downlink_bps <= 0):
            raise ValueError(f"bandwidth must be > 0 and rtt >= 0, got {self.bandwidth_bps} bit/s, {self.rtt_ms} ms")
        if not self.overhead_ms >= 0:
            raise ValueError(f"overhead_ms must be >= 0, got {self.overhead_ms!r}")

    def transfer_ms(self, nbytes: float, down: bool = False) -> float:
        """Milliseconds to push ``nbytes`` through the link (serialisation delay, no propagation)."""
        rate = (self.downlink_bps or self.bandwidth_bps) if down else self.bandwidth_bps
        return 8e3 * nbytes / rate


@dataclass(frozen=True)
class WireCost:
    """One codec at one split point: bytes per request, edge encode ms, cloud decode ms, the hybrid's accuracy
    with this codec and exits off (``accuracy``) and on (``accuracy_exits``; default: the same). ``from_frame``:
    the codec sends the device's frame (an image codec), so the edge does not preprocess it."""

    bytes: float
    encode_ms: float
    decode_ms: float
    accuracy: float
    accuracy_exits: float | None = None
    from_frame: bool = False


@dataclass(frozen=True)
class ExitCost:
    """An exit head after segment ``after_segment``: its edge latency and, per split point, the fraction of all
    samples it answers when exits are on (``rates[split]``; an exit at or after the split is never reached)."""

    name: str
    after_segment: int
    ms: float
    rates: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitCost:
    """A split point: the cloud tail's latency and the wire cost per codec. Edge only (the last split point) has
    no wire; ``accuracy_exits`` is then the accuracy with exits on (default: the full model's)."""

    index: int
    cloud_ms: float = 0.0
    wire: Mapping[str, WireCost] = field(default_factory=dict)
    accuracy_exits: float | None = None


@dataclass(frozen=True)
class CostModel:
    """Everything the planner needs, as profiled. ``response_bytes``: the reply (logits plus framing);
    ``preprocess_ms``: the edge's preprocessing of a frame (0: not profiled, or the inputs are model-ready)."""

    segment_ms: Sequence[float]
    exits: Sequence[ExitCost]
    splits: Sequence[SplitCost]
    accuracy_full: float
    response_bytes: float = 64.0
    preprocess_ms: float = 0.0


@dataclass(frozen=True)
class Energy:
    """What energy costs on the device: compute power (W, so mJ per ms) and the link's radio model."""

    compute_w: float
    radio: RadioModel

    def __post_init__(self) -> None:
        if not self.compute_w > 0:
            raise ValueError(f"compute power must be > 0 W, got {self.compute_w!r}")


OBJECTIVES = ("latency", "energy")

BOTTLENECK = "bottleneck:"
"""In a cost model, the codecs through a split point's learned bottleneck are keyed ``bottleneck:<codec>``
(``bottleneck:int8``): the code of the split tensor travels, its ``encode_ms`` includes the encoder's, its
``decode_ms`` the bottleneck tail's. :attr:`Candidate.bottleneck` and :attr:`Candidate.route_codec` turn the key
back into a route."""


TEXT = "text"
"""In a text bundle's cost model, split point 0's route that sends the text itself (UTF-8; ``edgesplit profile`` on a
text bundle, :mod:`split.textprofile`): like an image codec it skips the edge's preprocessing (the tokenizer) and
feeds the fp32 tail; the cloud's tokenization is in its ``decode_ms``. A planning baseline: ``edgesplit cloud`` has
no tokenizer, so an edge sends the token ids (``fp32`` at split point 0) instead."""


@dataclass(frozen=True)
class Candidate:
    """A configuration and what it is expected to cost and score."""

    split: int
    codec: str
    exits: bool
    latency_ms: float
    accuracy: float
    edge_exit_rate: float
    offload_rate: float
    energy_mj: float | None = None

    @property
    def label(self) -> str:
        """``split 2, int8+zstd, exits`` (``split 2, bottleneck:int8, exits`` through the bottleneck)."""
        return f"split {self.split}, {self.codec}, {'exits' if self.exits else 'no exits'}"

    @property
    def bottleneck(self) -> bool:
        """Whether the route goes through the split point's learned bottleneck."""
        return self.codec.startswith(BOTTLENECK)

    @property
    def route_codec(self) -> str:
        """The codec a route sets (``fp32`` for edge only, without the :data:`BOTTLENECK` prefix)."""
        codec = self.codec.removeprefix(BOTTLENECK)
        return "fp32" if codec == "-" else codec


def _edge_walk(costs: CostModel, split: int, exits: bool, codec: str = "-") -> tuple[float, float, float]:
    """(expected edge ms of the samples that exit, edge ms up to the split, fraction answered by exits). The edge
    preprocesses a frame first, except on a route that sends the frame itself (an image codec at split 0)."""
    n = len(costs.segment_ms)
    heads = {e.after_segment: e for e in costs.exits} if exits else {}
    from_frame = split < n and _wire(costs, split, codec).from_frame
    spent, expected, exited = (0.0 if from_frame else costs.preprocess_ms), 0.0, 0.0
    for i in range(split):
        spent += costs.segment_ms[i]
        head = heads.get(i)
        if head is not None and i + 1 < n:  # the edge runs an exit head only where more work remains
            spent += head.ms
            rate = head.rates.get(split, 0.0)
            expected += rate * spent
            exited += rate
    return expected, spent, exited


def _wire(costs: CostModel, split: int, codec: str) -> WireCost:
    sc = _split(costs, split)
    if codec not in sc.wire:
        raise ValueError(f"split point {split} has no costs for codec {codec!r}; profiled codecs: {list(sc.wire)}")
    return sc.wire[codec]


def expected_latency_ms(
    costs: CostModel, network: Network, split: int, codec: str, exits: bool
) -> tuple[float, float, float]:
    """(expected latency in ms, fraction answered by exits, fraction offloaded) of one configuration."""
    sc = _split(costs, split)
    expected, spent, exited = _edge_walk(costs, split, exits, codec)
    rest = max(0.0, 1.0 - exited)
    if split == len(costs.segment_ms):
        return expected + rest * spent, exited, 0.0
    wire = _wire(costs, split, codec)
    remote = (
        wire.encode_ms
        + network.rtt_ms
        + network.overhead_ms
        + network.transfer_ms(wire.bytes)
        + network.transfer_ms(costs.response_bytes, down=True)
        + wire.decode_ms
        + sc.cloud_ms
    )
    return expected + rest * (spent + remote), exited, rest


def expected_energy_mj(costs: CostModel, energy: Energy, split: int, codec: str, exits: bool) -> float:
    """Expected mJ per inference: compute power x expected edge compute ms + the offloaded share of the radio's
    energy for one request and its reply."""
    _split(costs, split)
    expected, spent, exited = _edge_walk(costs, split, exits, codec)
    rest = max(0.0, 1.0 - exited)
    if split == len(costs.segment_ms):
        return energy.compute_w * (expected + rest * spent)
    wire = _wire(costs, split, codec)
    compute = energy.compute_w * (expected + rest * (spent + wire.encode_ms))
    return compute + rest * energy.radio.energy_mj(wire.bytes + costs.response_bytes)


def _split(costs: CostModel, split: int) -> SplitCost:
    for sc in costs.splits:
        if sc.index == split:
            return sc
    raise ValueError(f"no costs for split point {split}; profiled split points: {[s.index for s in costs.splits]}")


def candidates(costs: CostModel, network: Network, energy: Energy | None = None) -> list[Candidate]:
    """Every (split, codec, exits) configuration with its expected latency, accuracy and (given ``energy``)
    energy, fastest first; on equal latency and accuracy the one that offloads less comes first, then the later
    split point (where every sample exits before a split point, it ties with edge-only, which needs no network)."""
    n = len(costs.segment_ms)
    out = []
    for sc in costs.splits:
        wires: Mapping[str, WireCost | None] = sc.wire if sc.index < n else {"-": None}
        for codec, wire in wires.items():
            for exits in (False, True):
                if exits and not any(e.after_segment < sc.index and e.after_segment + 1 < n for e in costs.exits):
                    continue  # no exit before this split: the same as exits off
                latency, exited, offloaded = expected_latency_ms(costs, network, sc.index, codec, exits)
                if wire is None:
                    accuracy = sc.accuracy_exits if exits and sc.accuracy_exits is not None else costs.accuracy_full
                else:
                    accuracy = wire.accuracy_exits if exits and wire.accuracy_exits is not None else wire.accuracy
                mj = None if energy is None else expected_energy_mj(costs, energy, sc.index, codec, exits)
                out.append(Candidate(sc.index, codec, exits, latency, accuracy, exited, offloaded, mj))
    return sorted(out, key=lambda c: (c.latency_ms, -c.accuracy, c.offload_rate, -c.split))


def plan(
    costs: CostModel,
    network: Network,
    budget: float = 0.01,
    *,
    objective: str = "latency",
    energy: Energy | None = None,
) -> Candidate:
    """The best configuration whose accuracy is at least ``accuracy_full - budget`` (budget as a fraction):
    the fastest (``objective="latency"``) or the one of least expected mJ per inference (``"energy"``, which
    needs ``energy``; ties: the faster)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if objective == "energy" and energy is None:
        raise ValueError("objective 'energy' needs an Energy (the device's compute power and the link's radio)")
    floor = costs.accuracy_full - budget - 1e-12
    ok = [c for c in candidates(costs, network, energy) if c.accuracy >= floor]
    if not ok:
        raise ValueError(f"no configuration reaches accuracy {floor:.4f}; the profile has none within the budget")
    if objective == "energy":
        return min(ok, key=lambda c: (c.energy_mj, c.latency_ms))
    return ok[0]


def best_accuracy_within(costs: CostModel, network: Network, target_ms: float) -> Candidate:
    """The dual: the most accurate configuration expected to answer within ``target_ms`` (ties: the faster)."""
    ok = [c for c in candidates(costs, network) if c.latency_ms <= target_ms]
    if not ok:
        fastest = candidates(costs, network)[0]
        raise ValueError(
            f"no configuration is expected within {target_ms} ms; the fastest is {fastest.label}"
            f" at {fastest.latency_ms:.2f} ms"
        )
    return max(ok, key=lambda c: (c.accuracy, -c.latency_ms))


def tensor_routes(costs: CostModel) -> CostModel:
    """``costs`` without the routes that send the frame itself (image codecs at split point 0): for an edge that
    is handed model-ready tensors (its server preprocesses a request before the runtime sees it)."""
    splits = tuple(replace(sc, wire={k: w for k, w in sc.wire.items() if not w.from_frame}) for sc in costs.splits)
    return replace(costs, splits=splits)


def _wire_costs(c: Mapping[str, Any]) -> dict[str, WireCost]:
    """A split point's (or its bottleneck's) profiled codecs as wire costs."""
    wire = {}
    for name, w in c["wire"].items():
        codec = Codec.parse("fp32" if name == TEXT else name)
        wire[name] = WireCost(
            w["bytes"],
            w["encode_ms"],
            w["decode_ms"] + c["cloud_ms"][codec.tail],  # parse (+ decode an image, tokenize a text) + the tail
            w["accuracy"],
            w["accuracy_exits"],
            from_frame=codec.image or name == TEXT,
        )
    return wire


def cost_model(manifest: Manifest) -> CostModel:
    """The cost model ``edgesplit profile`` wrote into ``manifest``; ``ValueError`` when it is not profiled."""
    p = manifest.profile
    if not p:
        raise ValueError(f"bundle of {manifest.model!r} has no profile: run `edgesplit profile --bundle DIR` first")
    n = len(manifest.segments)
    costs = {sp.index: dict(sp.cost or {}) for sp in manifest.split_points}
    exits = tuple(
        ExitCost(
            e.name,
            e.after_segment,
            float(p["exit_ms"][e.name]),
            {k: float(c.get("exit_rates", {}).get(e.name, 0.0)) for k, c in costs.items()},
        )
        for e in manifest.exits
    )
    splits = []
    for sp in manifest.split_points:
        c = costs[sp.index]
        if sp.index == n:
            splits.append(SplitCost(sp.index, accuracy_exits=c.get("accuracy_exits")))
            continue
        wire = _wire_costs(c)
        if "bottleneck" in c:  # profiled with its bottleneck: those routes too
            wire.update({BOTTLENECK + k: w for k, w in _wire_costs(c["bottleneck"]).items()})
        splits.append(SplitCost(sp.index, 0.0, wire))
    return CostModel(
        tuple(p["segment_ms"]),
        exits,
        tuple(splits),
        float(p["accuracy_full"]),
        float(p["response_bytes"]),
        float(p.get("preprocess_ms", 0.0)),
    )
