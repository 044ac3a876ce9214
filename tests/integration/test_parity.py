"""Numeric parity: the exported ONNX segments, exits and tails agree with the PyTorch model at every split point."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

# Tolerances: fp32 graphs, BatchNorm folded into convolutions by the exporter -> small reassociation error.
RTOL, ATOL = 1e-4, 1e-4


def _session(bundle, rel: str) -> ort.InferenceSession:  # type: ignore[no-untyped-def]
    return ort.InferenceSession(str(bundle.file(rel)), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def reference(trained, digits):  # type: ignore[no-untyped-def]
    """PyTorch outputs at every boundary, and every exit's logits, for the whole test split."""
    _, net, _ = trained
    x = torch.from_numpy(digits.x_test)
    with torch.no_grad():
        boundaries = [x]
        for segment in net.segments:
            boundaries.append(segment(boundaries[-1]))
        exits = net.forward_all(x)[1]
    return [b.numpy() for b in boundaries], [e.numpy() for e in exits]


def test_segments_match_pytorch(bundle, reference) -> None:  # type: ignore[no-untyped-def]
    boundaries, _ = reference
    for seg in bundle.manifest.segments:
        out = _run(_session(bundle, seg.file), boundaries[seg.index])
        assert out.shape == boundaries[seg.index + 1].shape and out.dtype == np.float32
        np.testing.assert_allclose(out, boundaries[seg.index + 1], rtol=RTOL, atol=ATOL)


def test_exits_match_pytorch(bundle, reference) -> None:  # type: ignore[no-untyped-def]
    boundaries, exits = reference
    assert len(bundle.manifest.exits) == len(exits) > 0
    for spec, expected in zip(bundle.manifest.exits, exits, strict=True):
        out = _run(_session(bundle, spec.file), boundaries[spec.after_segment + 1])
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out.argmax(-1), expected.argmax(-1))
        np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_every_split_point_matches_full_model(bundle, reference) -> None:  # type: ignore[no-untyped-def]
    """Edge segments [0, k) then the cloud's fused tail k == the PyTorch model, for every split point k."""
    boundaries, _ = reference
    full = boundaries[-1]
    segments = [_session(bundle, s.file) for s in bundle.manifest.segments]
    offloading = [sp for sp in bundle.manifest.split_points if sp.tail]
    assert [sp.index for sp in offloading] == list(range(len(segments)))
    for sp in offloading:
        x = boundaries[0]
        for session in segments[: sp.index]:
            x = _run(session, x)
        logits = _run(_session(bundle, sp.tail), x)
        assert logits.shape == full.shape and logits.dtype == np.float32
        np.testing.assert_array_equal(logits.argmax(-1), full.argmax(-1), err_msg=f"split point {sp.index}")
        np.testing.assert_allclose(logits, full, rtol=RTOL, atol=ATOL, err_msg=f"split point {sp.index}")
