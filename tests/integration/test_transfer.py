"""Transfer: the pretrained MobileNetV2 backbone stays frozen, a linear probe and the exits learn the user's classes
from one stored pass over the images, and the bundle answers photos on the edge; with ``finetune_blocks=2`` the
last two blocks learn too, and nothing before them changes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from edge.runtime import EdgeRuntime
from protos.preprocessing import Preprocessing
from split.data import Dataset, _split_indices
from split.partition import ModelConfig
from split.pipeline import BundleConfig, Pretrained, make_bundle, trained_model
from split.preprocess import Cropper
from split.pretrained import load_pretrained
from split.train import ExitLoss, TrainConfig, predict
from split.transfer import classifier_of

SPEC = Preprocessing(resize=64, crop=64)  # ImageNet mean/std; small, so the frozen pass takes seconds


@pytest.fixture(scope="module")
def digit_photos():  # type: ignore[no-untyped-def]
    """The digits as 64-px RGB photos (frames and the dataset made from them by the bundle's own steps)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    frames = np.repeat((digits.images * (255 / 16)).round().astype(np.uint8)[..., None], 3, axis=-1)
    x = SPEC.normalize(Cropper(SPEC)(frames))
    y = digits.target.astype(np.int64)
    train, cal, test = _split_indices(len(x), 0.2, 0.15, 0)
    data = Dataset("digit-photos", tuple(map(str, range(10))), x[train], y[train], x[cal], y[cal], x[test], y[test],
                   SPEC.to_dict())  # fmt: skip
    return data, frames[test]


POINTS = ("features.3", "features.6", "features.13")
MODEL = ModelConfig("mobilenet_v2", 1.0, 3, 64, 10, split_points=POINTS, exits=POINTS[:2])
TRAIN = TrainConfig(epochs=4, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def transferred(digit_photos, tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    data, _ = digit_photos
    cache = tmp_path_factory.mktemp("cache")
    net, cached = trained_model(data, MODEL, TRAIN, cache, progress=False, pretrained=Pretrained())
    assert not cached
    return net, cache


def test_the_backbone_is_the_published_one_and_only_the_classifier_is_new(transferred, digit_photos) -> None:  # type: ignore[no-untyped-def]
    """The published network with the probe's classifier put in answers exactly as the transferred one."""
    net, _ = transferred
    data, _ = digit_photos
    reference = load_pretrained("mobilenet_v2", num_classes=10, image_size=64)
    classifier_of(reference).load_state_dict(classifier_of(net).state_dict())
    x = torch.from_numpy(np.asarray(data.x_test[:16]))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-5)


def test_probe_and_exits_learned_the_new_classes(transferred, digit_photos) -> None:  # type: ignore[no-untyped-def]
    net, _ = transferred
    data, _ = digit_photos
    final, exits = predict(net, data.x_test)
    assert (final.argmax(-1) == data.y_test).mean() > 0.85  # a linear probe on ImageNet features; chance is 0.1
    assert all((e.argmax(-1) == data.y_test).mean() > 0.5 for e in exits)


def test_a_second_call_is_cached_and_distilled_exits_train_too(transferred, digit_photos) -> None:  # type: ignore[no-untyped-def]
    net, cache = transferred
    data, _ = digit_photos
    again, cached = trained_model(data, MODEL, TRAIN, cache, progress=False, pretrained=Pretrained())
    assert cached and all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True)
    )
    kd, cached = trained_model(data, MODEL, TrainConfig(epochs=1), cache, progress=False,
                               loss=ExitLoss("kd", 2.0), pretrained=Pretrained())  # fmt: skip
    assert not cached
    assert (predict(kd, data.x_test[:100])[1][1].argmax(-1) == data.y_test[:100]).mean() > 0.3


def test_the_bundle_answers_photos(transferred, digit_photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cache = transferred
    data, test_frames = digit_photos
    bundle, _ = make_bundle(data, MODEL, TRAIN, BundleConfig(default_split=2), cache, tmp_path / "b", progress=False,
                            pretrained=Pretrained())  # fmt: skip
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    labels = [runtime.infer(_png(frame)).label for frame in test_frames[:60]]
    assert np.mean(np.asarray(labels) == data.y_test[:60]) > 0.8


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "PNG")
    return buffer.getvalue()


FINETUNE = Pretrained(finetune_blocks=2)
TUNED = ("features.17.", "features.18.")


@pytest.fixture(scope="module")
def finetuned(transferred, digit_photos):  # type: ignore[no-untyped-def]
    data, _ = digit_photos
    _, cache = transferred
    net, cached = trained_model(data, MODEL, TRAIN, cache, progress=False, pretrained=FINETUNE)
    assert not cached  # not the linear probe's cache entry
    return net


def test_fine_tuning_changes_the_last_two_blocks_and_nothing_before(finetuned) -> None:  # type: ignore[no-untyped-def]
    """Weights and batch-norm statistics before features.17 are the published ones, bit for bit; both change in
    the fine-tuned blocks."""
    published = load_pretrained("mobilenet_v2", num_classes=10, image_size=64).state_dict()
    tuned = {k.split(".", 2)[2]: v for k, v in finetuned.state_dict().items() if k.startswith("segments.")}
    frozen = [k for k in published if not k.startswith((*TUNED, "classifier."))]
    assert len(frozen) == 288 and all(torch.equal(tuned[k], published[k]) for k in frozen)
    changed = [k for k in published if k.startswith(TUNED) and k.endswith(("weight", "running_mean", "running_var"))]
    assert len(changed) == 16 and all(not torch.equal(tuned[k], published[k]) for k in changed)


def test_fine_tuning_learns_at_least_as_well_as_the_probe(finetuned, transferred, digit_photos) -> None:  # type: ignore[no-untyped-def]
    data, _ = digit_photos
    accuracy = [(predict(net, data.x_test)[0].argmax(-1) == data.y_test).mean() for net in (transferred[0], finetuned)]
    assert accuracy[1] > 0.85 and accuracy[1] >= accuracy[0] - 0.02, accuracy


def test_the_fine_tuned_bundle_answers_photos(finetuned, transferred, digit_photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cache = transferred
    data, test_frames = digit_photos
    bundle, _ = make_bundle(data, MODEL, TRAIN, BundleConfig(default_split=2), cache, tmp_path / "b", progress=False,
                            pretrained=FINETUNE)  # fmt: skip
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    labels = [runtime.infer(_png(frame)).label for frame in test_frames[:60]]
    assert np.mean(np.asarray(labels) == data.y_test[:60]) > 0.85


def test_pretrained_needs_rgb_images(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from split.cli import main

    assert main(["export", "--out", str(tmp_path / "b"), "--pretrained", "--family", "mobilenet_v2"]) == 1
    assert "takes RGB images (3 channels); this data has 1" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "b"), "--pretrained", "--family", "resnet"]) == 1
    assert "families with weights: ['efficientnet_lite0', 'mobilenet_v2']" in capsys.readouterr().err
