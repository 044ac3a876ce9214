"""Shared fixtures. Tests are marked by folder: tests/unit -> unit, tests/integration -> integration, tests/e2e -> e2e,
tests/docker -> docker.

The ``bundle`` fixture trains a small network on the digits for a few epochs (seconds) and exports it once per
session; ``cloud`` serves it in-process on 127.0.0.1 with a free port. ``pki`` writes test certificates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

_FOLDER_MARKS = {"unit", "integration", "e2e", "docker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = set(Path(str(item.fspath)).parts) & _FOLDER_MARKS
        for mark in parts:
            item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def digits():  # type: ignore[no-untyped-def]
    from split.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def trained(digits, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(bundle, net, model_config): a width-0.25 MobileNetV2 trained 4 epochs, calibrated and exported."""
    import torch

    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, make_bundle
    from split.train import TrainConfig

    torch.set_num_threads(2)
    model = ModelConfig(width=0.25)
    out = tmp_path_factory.mktemp("bundle")
    bundle, net = make_bundle(
        digits,
        model,
        TrainConfig(epochs=4),
        BundleConfig(default_split=2),
        cache=tmp_path_factory.mktemp("cache"),
        out=out,
        progress=False,
    )
    return bundle, net, model


@pytest.fixture(scope="session")
def bundle(trained):  # type: ignore[no-untyped-def]
    return trained[0]


@pytest.fixture()
def cloud(bundle) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An in-process cloud server for ``bundle`` on 127.0.0.1:0; yields ``host:port`` once ready."""
    from cloud.server import CloudConfig, CloudServer

    server = CloudServer(CloudConfig(bundles=(str(bundle.root),), port=0, threads=1))
    port = server.start()
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield target
    server.stop(grace=1.0)


@dataclass(frozen=True)
class PKI:
    """PEM files: a CA, a server certificate for localhost and 127.0.0.1, a client certificate from the same CA,
    and a client certificate from another CA (which the server must refuse)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str
    other_client_cert: str
    other_client_key: str


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    import trustme

    root = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    files: dict[str, str] = {}

    def write(name: str, blob: trustme.Blob) -> None:
        path = root / f"{name}.pem"
        blob.write_to_path(str(path))
        files[name] = str(path)

    write("ca", ca.cert_pem)
    write("other_ca", other.cert_pem)
    for name, issuer, identity in [
        ("server", ca, ("localhost", "127.0.0.1")),
        ("client", ca, ("edge-1.example",)),
        ("other_client", other, ("edge-2.example",)),
    ]:
        cert = issuer.issue_cert(*identity)
        write(f"{name}_key", cert.private_key_pem)
        path = root / f"{name}_cert.pem"
        path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        files[f"{name}_cert"] = str(path)
    return PKI(**files)


@pytest.fixture(scope="session")
def interop_python() -> Path:
    """``.venv-interop/bin/python``: third-party clients (tritonclient) with their own protobuf, run in a subprocess.

    ``make install`` builds it from ``constraints-interop.txt``; CI runs these tests, so a missing one fails.
    """
    python = Path(__file__).resolve().parent.parent / ".venv-interop" / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"{python} is missing: run `make install` (it builds .venv-interop with tritonclient)")
    return python


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """foolbox's 20 ImageNet validation JPEGs (512x512 RGB; the label is in the name). Read as files, never imported:
    the ``weights`` extra installs foolbox, and ``make install`` installs the extra."""
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("foolbox is not installed: run `make install` (the weights extra carries the test photos)")
    files = sorted((Path(next(iter(spec.submodule_search_locations))) / "data").glob("imagenet_*.jpg"))
    assert len(files) == 20
    return files


@pytest.fixture(scope="session")
def rgb_digits():  # type: ignore[no-untyped-def]
    """The digits as uint8 RGB frames, preprocessed by the bundle's own steps (resize 36, centre crop 32):
    ``(dataset, frames)``, ``frames`` the raw 8x8x3 uint8 frames in dataset order (train, calibration, test)."""
    import numpy as np
    from sklearn.datasets import load_digits as sk_digits

    from protos.preprocessing import Preprocessing
    from split.data import Dataset, _split_indices
    from split.preprocess import Cropper

    digits = sk_digits()
    frames = np.repeat((digits.images * (255 / 16)).round().astype(np.uint8)[..., None], 3, axis=-1)
    spec = Preprocessing(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = spec.normalize(Cropper(spec)(frames))
    y = digits.target.astype(np.int64)
    train, cal, test = _split_indices(len(x), 0.2, 0.15, 0)
    data = Dataset("rgb-digits", tuple(map(str, range(10))), x[train], y[train], x[cal], y[cal], x[test], y[test],
                   spec.to_dict())  # fmt: skip
    return data, {"train": frames[train], "cal": frames[cal], "test": frames[test]}


@pytest.fixture(scope="session")
def image_bundle(rgb_digits, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A width-0.25 MobileNetV2 trained 3 epochs on the RGB digits, exported with its preprocessing graph."""
    import torch

    from split.partition import ModelConfig
    from split.pipeline import BundleConfig, make_bundle
    from split.train import TrainConfig

    torch.set_num_threads(2)
    data, _ = rgb_digits
    model = ModelConfig(width=0.25, in_channels=3, image_size=32)
    bundle, _ = make_bundle(data, model, TrainConfig(epochs=3), BundleConfig(default_split=2),
                            cache=tmp_path_factory.mktemp("cache"), out=tmp_path_factory.mktemp("image-bundle"),
                            progress=False)  # fmt: skip
    return bundle
