"""Distilled exits: the KD loss itself, and exits-only training by distillation on a frozen backbone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from split.train import ExitLoss, TrainConfig, exit_loss, predict, train_exits


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "mse"}, "not one of"), ({"kind": "kd", "temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha")],
)
def test_exit_loss_config_is_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExitLoss(**kwargs)


def test_kd_loss_is_zero_on_the_teacher_and_grows_away_from_it() -> None:
    torch.manual_seed(0)
    final = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    kd = ExitLoss("kd", temperature=3.0)
    assert float(exit_loss(final.clone(), final, labels, kd)) == pytest.approx(0.0, abs=1e-6)
    assert float(exit_loss(torch.randn(16, 10), final, labels, kd)) > 0.1
    # alpha = 1 is plain cross-entropy; the default kind is cross-entropy
    logits = torch.randn(16, 10)
    ce = float(torch.nn.functional.cross_entropy(logits, labels))
    assert float(exit_loss(logits, final, labels, ExitLoss("kd", alpha=1.0))) == pytest.approx(ce, rel=1e-6)
    assert float(exit_loss(logits, final, labels, ExitLoss())) == pytest.approx(ce, rel=1e-6)


def test_kd_loss_does_not_train_the_teacher() -> None:
    final = torch.randn(8, 10, requires_grad=True)
    logits = torch.randn(8, 10, requires_grad=True)
    exit_loss(logits, final, torch.zeros(8, dtype=torch.long), ExitLoss("kd")).backward()
    assert final.grad is None
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_distilled_exits_follow_the_final_classifier_on_a_frozen_backbone(trained, digits) -> None:  # type: ignore[no-untyped-def]
    _, net, _ = trained
    net = copy.deepcopy(net)
    for head in net.exits:  # start the exits afresh: only distillation teaches them
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    backbone = {k: v.clone() for k, v in net.segments.state_dict().items()}
    final_before, exits_before = predict(net, digits.x_test)
    agreement_before = (exits_before[-1].argmax(-1) == final_before.argmax(-1)).mean()
    history = train_exits(net, digits, TrainConfig(epochs=3), progress=False, loss=ExitLoss("kd", temperature=4.0))
    assert history[-1] < history[0]
    for k, v in net.segments.state_dict().items():
        torch.testing.assert_close(v, backbone[k], rtol=0, atol=0)
    final_after, exits = predict(net, digits.x_test)
    np.testing.assert_array_equal(final_after, final_before)
    agreement = (exits[-1].argmax(-1) == final_after.argmax(-1)).mean()
    assert agreement > max(0.4, agreement_before + 0.2), (agreement_before, agreement)  # chance: 0.1
