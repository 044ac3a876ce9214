"""``edgesplit bench text``'s planner column: profile a text bundle under one exit policy and ask the planner.

The bundle is profiled (:mod:`split.textprofile`) on the calibration split, on the benchmark's device profile, with
the policy in force (entropy thresholds or patience K); :func:`edge.planner.plan` then picks the route within the
budget for the benchmark's network, among edge-only (exits on/off), every split point's hidden states (fp32,
fp16) and cloud-only (split 0: the token ids, or the text itself).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from edge.planner import Network, candidates, cost_model, plan
from netsim.profiles import Profile
from protos.bundle import Bundle, write_manifest
from split.textprofile import profile_text_bundle

__all__ = ["planned"]


def planned(
    bundle: Bundle,
    policy: dict[str, Any],
    cal: tuple[list[str], np.ndarray],
    *,
    device: str,
    host_ms: float,
    net: Profile,
    budget: float,
    samples: int | None,
) -> dict[str, Any]:
    """The planner's choice for ``bundle`` under ``policy`` (the manifest's ``preprocessing.policy``) on ``net``,
    and the three routes it weighs it against (edge-only with exits, cloud-only sending the text, the best
    hybrid), all as expected from the profile; ``budget`` in points; ``samples``: the first calibration texts
    profiled (``None``: all, which the budget was calibrated on, so the planner's accuracy check agrees)."""
    m = bundle.manifest
    write_manifest(bundle.root, replace(m, preprocessing={**m.preprocessing, "policy": policy}))
    texts, labels = cal[0][:samples], cal[1][:samples]
    manifest = profile_text_bundle(Bundle.load(bundle.root), texts, labels, runs=20, device_name=device,
                                   host_reference_ms=host_ms)  # fmt: skip
    costs = cost_model(manifest)
    network = Network(net.bandwidth_mbit * 1e6, net.rtt_ms)
    chosen = plan(costs, network, budget / 100)
    every = candidates(costs, network)
    n = len(manifest.segments)
    hybrid = min((c for c in every if 0 < c.split < n), key=lambda c: c.latency_ms)
    edge = next(c for c in every if c.split == n and c.exits)
    text = next(c for c in every if c.codec == "text")
    return {
        "plan": chosen.__dict__,
        "edge_only": edge.__dict__,
        "cloud_text": text.__dict__,
        "best_hybrid": hybrid.__dict__,
        "candidates": [c.__dict__ for c in every],
        "tokens": manifest.profile["text"]["tokens"],
        "profile_samples": len(labels),
    }
