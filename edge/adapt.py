"""Run-time adaptation: estimate the link from the traffic the edge already carries and re-plan when it changes.

:class:`LinkEstimator` keeps moving averages (EWMA) of the round-trip time, from small probes (ServerLive), and
of the transfer time per byte, from real offloads (the request's round trip minus the server's own time, which
the cloud reports in ``edgesplit.server_ms``, minus the RTT). :class:`AdaptiveEdge` wraps an
:class:`~edge.runtime.EdgeRuntime`: it answers every request, feeds the estimator, and when the estimate leaves a
hysteresis band around the network the current plan was made for, re-plans with :func:`edge.planner.plan` and,
when the new plan is expected to be faster than the current one by at least ``min_gain`` on the estimated network
(a second hysteresis: near-equal configurations, e.g. two codecs of a few hundred bytes, must not flap), switches
the runtime's route (atomically: no restart, no request dropped). When the plan keeps everything on
the edge, a raw-input request every ``probe_every`` requests keeps the bandwidth estimate alive. Probes run on a
background thread, one at a time, so they never add to a request's latency.

Example:
    >>> edge = AdaptiveEdge(runtime, client, cost_model(manifest), Network(18.9e6, 20))   # doctest: +SKIP
    >>> edge.infer(x).source, edge.status()["plan"]                                        # doctest: +SKIP
    ('cloud', 'split 2, int8+zstd, exits')
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.client import CloudClient
from edge.errors import EdgeError
from edge.planner import Candidate, CostModel, Network, expected_latency_ms, plan
from edge.runtime import Answer, EdgeRuntime
from protos.bundle import Manifest

__all__ = ["AdaptiveEdge", "LinkEstimator", "Switch", "outside_band", "worth_switching"]


class LinkEstimator:
    """EWMA estimates of RTT (ms) and uplink bandwidth (bits/s); ``alpha`` weighs the newest sample.

    A transfer of fewer than ``full_weight_bytes`` counts in proportion to its size: the time a few hundred bytes
    spend beyond the RTT is mostly jitter, and read as bandwidth it would swing the estimate by orders of magnitude.
    """

    def __init__(self, initial: Network, alpha: float = 0.3, full_weight_bytes: int = 4096) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.full_weight_bytes = alpha, full_weight_bytes
        self.rtt_ms = initial.rtt_ms
        self.ms_per_byte = 8e3 / initial.bandwidth_bps
        self.samples = 0

    def observe_rtt(self, ms: float) -> None:
        """A round trip that carried (almost) no payload."""
        self.rtt_ms += self.alpha * (ms - self.rtt_ms)

    def observe_transfer(self, nbytes: int, network_ms: float) -> None:
        """A request of ``nbytes`` whose time on the network (round trip minus server time) was ``network_ms``."""
        if nbytes <= 0:
            return
        per_byte = max(network_ms - self.rtt_ms, 1e-3) / nbytes
        weight = min(1.0, nbytes / self.full_weight_bytes)
        self.ms_per_byte += self.alpha * weight * (per_byte - self.ms_per_byte)
        self.samples += 1

    @property
    def network(self) -> Network:
        """The current estimate."""
        return Network(8e3 / self.ms_per_byte, max(self.rtt_ms, 0.0))


def outside_band(planned: Network, now: Network, band: float) -> bool:
    """Whether ``now`` differs from ``planned`` by more than the hysteresis ``band`` (a fraction) in bandwidth,
    or in RTT by more than ``band`` of it plus one millisecond (RTTs near zero jitter by whole fractions)."""
    ratio = now.bandwidth_bps / planned.bandwidth_bps
    return not (1 / (1 + band) <= ratio <= 1 + band) or abs(now.rtt_ms - planned.rtt_ms) > band * planned.rtt_ms + 1.0


def worth_switching(costs: CostModel, now: Network, current: Candidate, chosen: Candidate, min_gain: float) -> bool:
    """Whether ``chosen`` is expected to beat ``current`` on ``now`` by more than ``min_gain`` (a fraction)."""
    if (chosen.split, chosen.codec, chosen.exits) == (current.split, current.codec, current.exits):
        return False
    current_ms, _, _ = expected_latency_ms(costs, now, current.split, current.codec, current.exits)
    return chosen.latency_ms < (1 - min_gain) * current_ms


@dataclass(frozen=True)
class Switch:
    """A re-plan that changed the route: after which request, from what to what, for which network estimate."""

    request: int
    before: str
    after: str
    network: Network


class AdaptiveEdge:
    """An edge runtime that follows the network. Thread-safe: requests may run while it switches."""

    def __init__(
        self,
        runtime: EdgeRuntime,
        client: CloudClient,
        costs: CostModel,
        network: Network,
        *,
        budget: float = 0.01,
        band: float = 0.3,
        probe_every: int = 10,
        alpha: float = 0.3,
        min_gain: float = 0.1,
    ) -> None:
        self.runtime, self.client, self.costs, self.budget, self.band = runtime, client, costs, budget, band
        self.probe_every, self.min_gain = probe_every, min_gain
        self.estimator = LinkEstimator(network, alpha)
        self.switches: list[Switch] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._planned_for = network
        self._probe_thread: threading.Thread | None = None
        self.plan = plan(costs, network, budget)
        self._apply(self.plan)

    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest."""
        return self.runtime.manifest

    @property
    def split(self) -> int:
        """The current split point."""
        return self.runtime.split

    def _apply(self, chosen: Candidate) -> None:
        if chosen.bottleneck:
            self.runtime.set_route(chosen.split, chosen.route_codec, chosen.exits, bottleneck=True)
        else:
            self.runtime.set_route(chosen.split, chosen.route_codec, chosen.exits)

    def infer(self, x: np.ndarray) -> Answer:
        """Answer one sample on the current route, then learn from it (and maybe re-plan)."""
        answer = self.runtime.infer(x)
        with self._lock:
            self.requests += 1
            if answer.source == "cloud":
                self.estimator.observe_transfer(answer.bytes_sent, answer.rpc_ms - answer.server_ms)
            if self.requests % self.probe_every == 0 and self._probe_thread is None:
                sample = np.array(x, dtype=np.float32).reshape(1, *self.manifest.input.sample_shape)
                self._probe_thread = threading.Thread(target=self._probe, args=(sample,), daemon=True)
                self._probe_thread.start()
            self._maybe_replan()
        return answer

    def _probe(self, sample: np.ndarray) -> None:
        rtt, transfer = None, None
        try:
            rtt = self.client.ping()
            if self.plan.offload_rate == 0:  # nothing offloaded: measure the uplink with one raw input
                reply = self.client.infer(0, self.manifest.input.name, sample)
                transfer = (reply.bytes_sent, reply.rpc_ms - reply.server_ms)
        except EdgeError:
            pass  # an unreachable cloud shows in the next offload; a probe never fails a request
        with self._lock:
            if rtt is not None:
                self.estimator.observe_rtt(rtt)
            if transfer is not None:
                self.estimator.observe_transfer(*transfer)
            self._probe_thread = None
            self._maybe_replan()

    def wait_probes(self, timeout: float | None = None) -> None:
        """Wait for the probe in flight, if any (tests and benchmarks that read the estimate)."""
        thread = self._probe_thread
        if thread is not None:
            thread.join(timeout)

    def _maybe_replan(self) -> None:
        now = self.estimator.network
        if not outside_band(self._planned_for, now, self.band):
            return
        chosen = plan(self.costs, now, self.budget)
        self._planned_for = now
        if worth_switching(self.costs, now, self.plan, chosen, self.min_gain):
            self.switches.append(Switch(self.requests, self.plan.label, chosen.label, now))
            self._apply(chosen)
            self.plan = chosen

    def status(self) -> dict[str, Any]:
        """The current plan, the network estimate it was made for, and every switch so far."""
        with self._lock:
            est = self.estimator.network
            return {
                "plan": self.plan.label,
                "split": self.plan.split,
                "codec": self.plan.codec,
                "exits": self.plan.exits,
                "expected_ms": self.plan.latency_ms,
                "estimate": {"bandwidth_bps": est.bandwidth_bps, "rtt_ms": est.rtt_ms},
                "requests": self.requests,
                "switches": [
                    {"request": s.request, "from": s.before, "to": s.after, "bandwidth_bps": s.network.bandwidth_bps}
                    for s in self.switches
                ],
            }
