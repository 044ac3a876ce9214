"""A user's own nn.Module goes the same path as the families: traced split points, exits trained on the frozen
backbone, calibration, export, and ONNX Runtime answers equal to PyTorch's."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.runtime import EdgeRuntime
from protos.bundle import Bundle
from split.cli import main
from split.usermodel import load_user_model

USER_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())

        def forward(self, x):
            return x + self.body(x)


    def build(classes=10):
        return nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            Residual(8),
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            Residual(16),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes)),
        )
    """
)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory, digits) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The model file and a state_dict trained here for a few steps (the user's trained backbone)."""
    root = tmp_path_factory.mktemp("user")
    source = root / "mynet.py"
    source.write_text(USER_MODEL)
    torch.manual_seed(0)
    model = load_user_model(source, "build").train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = root / "mynet.pt"
    torch.save(model.state_dict(), weights)
    return source, weights


@pytest.fixture(scope="module")
def user_bundle(user_files, tmp_path_factory: pytest.TempPathFactory) -> Bundle:  # type: ignore[no-untyped-def]
    source, weights = user_files
    out = tmp_path_factory.mktemp("user_bundle") / "bundle"
    argv = ["export", "--model-file", str(source), "--weights", str(weights), "--split-points", "1", "3"]
    argv += ["--epochs", "2", "--out", str(out), "--cache-dir", str(tmp_path_factory.mktemp("cache"))]
    assert main(argv) == 0
    return Bundle.load(out)


def test_bundle_is_cut_where_asked_with_exits_there(user_bundle: Bundle) -> None:
    m = user_bundle.manifest
    assert [sp.name for sp in m.split_points] == ["input", "1", "3", "output"]
    assert [e.after_segment for e in m.exits] == [0, 1]
    assert m.segments[1].input.shape == (-1, 8, 16, 16)


def test_frozen_backbone_answers_exactly_as_the_users_weights(user_files, user_bundle: Bundle, digits) -> None:  # type: ignore[no-untyped-def]
    source, weights = user_files
    model = load_user_model(source, "build", weights=weights)
    with torch.no_grad():
        expected = model(torch.from_numpy(digits.x_test[:40])).numpy()
    runtime = EdgeRuntime(user_bundle, split=len(user_bundle.manifest.segments), exits=False)
    got = np.stack([runtime.infer(x).probabilities for x in digits.x_test[:40]])
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    e = np.exp(expected - expected.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=1e-4, atol=1e-5)


def test_exits_were_trained_and_calibrated(user_bundle: Bundle) -> None:
    """Every exit is calibrated; together they answer calibration samples within the budget. (A later exit may see
    none: with a briefly trained backbone the first exit can be as good and take every sample.)"""
    exits = user_bundle.manifest.exits
    assert exits[0].calibration["reached"] > 0 and all(e.threshold <= 2.0 for e in exits)
    assert sum(e.calibration["exited"] for e in exits) > 0
    stats = exits[0].calibration
    assert stats["accuracy_hybrid"] >= stats["accuracy_full"] - stats["budget"]


def test_a_boundary_inside_a_residual_block_is_refused(user_files, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    source, weights = user_files
    argv = ["export", "--model-file", str(source), "--weights", str(weights), "--split-points", "1.body.0"]
    assert main([*argv, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "'1.body.0' is not a valid split point (2 tensors cross that boundary" in err
    assert "valid split points: ['0.0', '0.1', '0', '1', '2.0', '2.1', '2', '3'" in err
    assert not (tmp_path / "b").exists()


def test_missing_function_lists_what_the_file_defines(user_files) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"no function 'make'; functions defined there: \['build'\]"):
        load_user_model(user_files[0], "make")


def test_weights_that_do_not_fit_name_the_keys(user_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = torch.load(user_files[1], weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["0.0.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"missing keys \['0.0.weight'\], unexpected keys \['extra.weight'\]"):
        load_user_model(user_files[0], "build", weights=tmp_path / "bad.pt")


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_weights_are_never_unpickled_as_code(user_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.save({"0.0.weight": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_user_model(user_files[0], "build", weights=tmp_path / "evil.pt")
