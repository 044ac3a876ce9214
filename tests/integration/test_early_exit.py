"""An early exit really stops computation: the later segments' ONNX sessions are never run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.errors import EdgeError
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle


@pytest.fixture()
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the model file of every ONNX Runtime session run (a spy around the real method)."""
    calls: list[str] = []
    real_run = ort.InferenceSession.run

    def spy(self, output_names, input_feed, run_options=None):  # type: ignore[no-untyped-def]
        calls.append(Path(self._model_path).name)
        return real_run(self, output_names, input_feed, run_options)

    monkeypatch.setattr(ort.InferenceSession, "run", spy)
    return calls


def _with_thresholds(bundle: Bundle, **thresholds: float) -> Bundle:
    return Bundle(bundle.root, bundle.manifest.with_thresholds(thresholds, {}))


def test_confident_first_exit_skips_every_later_segment(bundle, digits, runs) -> None:  # type: ignore[no-untyped-def]
    n = len(bundle.manifest.segments)
    runtime = EdgeRuntime(_with_thresholds(bundle, exit0=0.0), split=n)  # edge only: no cloud to fall back on
    runs.clear()
    answer = runtime.infer(digits.x_test[0])
    assert (answer.source, answer.exit, answer.segments_run) == ("exit", "exit0", 1)
    assert runs == ["seg0.onnx", "exit0.onnx"]
    assert 0.0 < answer.confidence <= 1.0 and answer.label == int(answer.probabilities.argmax())


def test_second_exit_runs_exactly_two_segments(bundle, digits, runs) -> None:  # type: ignore[no-untyped-def]
    n = len(bundle.manifest.segments)
    runtime = EdgeRuntime(_with_thresholds(bundle, exit0=2.0, exit1=0.0), split=n)
    runs.clear()
    answer = runtime.infer(digits.x_test[0])
    assert (answer.source, answer.exit) == ("exit", "exit1")
    assert runs == ["seg0.onnx", "exit0.onnx", "seg1.onnx", "exit1.onnx"]


def test_no_confident_exit_runs_the_whole_model(bundle, digits, runs) -> None:  # type: ignore[no-untyped-def]
    n = len(bundle.manifest.segments)
    never = {e.name: 2.0 for e in bundle.manifest.exits}
    runtime = EdgeRuntime(_with_thresholds(bundle, **never), split=n)
    runs.clear()
    answer = runtime.infer(digits.x_test[0])
    assert answer.source == "edge" and answer.exit is None and answer.segments_run == n
    assert [r for r in runs if r.startswith("seg")] == [f"seg{i}.onnx" for i in range(n)]


def test_exits_off_never_runs_an_exit(bundle, digits, runs) -> None:  # type: ignore[no-untyped-def]
    runtime = EdgeRuntime(_with_thresholds(bundle, exit0=0.0), split=len(bundle.manifest.segments), exits=False)
    runs.clear()
    runtime.infer(digits.x_test[0])
    assert not [r for r in runs if r.startswith("exit")]


def test_offloading_split_without_cloud_is_refused(bundle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EdgeError, match="no cloud client"):
        EdgeRuntime(bundle, split=1)


def test_bad_input_shape_names_the_expected_shape(bundle) -> None:  # type: ignore[no-untyped-def]
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    with pytest.raises(ValueError, match=r"input must have shape \[1, 16, 16\]"):
        runtime.infer(np.zeros((3, 16, 16), dtype=np.float32))
