"""The fault suite on a small scale: a real cloud killed and restarted, a blackhole, resets, a collapsed link.

For each: no request lost, p99 latency at most the deadline plus a margin, and offloading back soon after the
fault ends (``edgesplit bench faults`` runs the same code at full scale).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.faults import FAULTS, run_fault
from protos.bundle import Bundle

DEADLINE_MS = 300.0
MARGIN_MS = 250.0  # a small shared machine
RECOVERY_S = 10.0


@pytest.mark.parametrize("fault", FAULTS)
def test_the_edge_answers_every_request_through_the_fault_and_recovers(bundle: Bundle, digits, fault: str) -> None:  # type: ignore[no-untyped-def]
    samples = np.ascontiguousarray(digits.x_test[:45])
    result = run_fault(fault, bundle, samples, DEADLINE_MS, pace_s=0.01, recovery_s=RECOVERY_S)
    assert result.requests == 45 and result.lost == 0
    assert result.degraded > 0  # the fault was felt: some requests needed the cloud and were answered locally
    assert result.p99_ms <= result.max_ms <= DEADLINE_MS + MARGIN_MS  # even the worst request
    assert result.recovery_s is not None and result.recovery_s <= RECOVERY_S
