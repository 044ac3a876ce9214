"""The bundle's preprocessing graph equals training's preprocessing on real photos, and the edge takes what a device
has: encoded images and uint8 frames, locally and over its KServe endpoint, with clear errors for bad ones."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from edge.runtime import EdgeRuntime
from edge.server import IMAGE, EdgeServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc
from protos.bundle import Bundle
from protos.preprocessing import FRAME, ImageError, Preprocessing, Preprocessor, decode_image
from protos.tensors import add_input, response_outputs
from split.preprocess import Cropper, write_preprocessing

IMAGENET = Preprocessing()  # resize 256, centre crop 224, ImageNet mean/std
SIZES = [(512, 512), (640, 480), (333, 500), (300, 260)]  # (W, H): square, landscape, portrait, barely above 256


def _pillow_reference(frame: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """torchvision's ImageNet eval transform on a PIL image (Resize(256) then CenterCrop(224)), in Pillow."""
    image = Image.fromarray(frame)
    w, h = image.size
    size = (spec.resize, spec.resize * h // w) if w < h else (spec.resize * w // h, spec.resize)
    image = image.resize(size, Image.Resampling.BILINEAR)
    top, left = round((size[1] - spec.crop) / 2), round((size[0] - spec.crop) / 2)
    return np.asarray(image)[top : top + spec.crop, left : left + spec.crop]


@pytest.fixture(scope="module")
def frames(photos: list[Path]) -> list[np.ndarray]:
    """Every photo at every size in SIZES (resampled with Lanczos, so the graph sees new pixels)."""
    out = []
    for path in photos:
        image = Image.fromarray(decode_image(path.read_bytes(), path.name))
        out += [np.asarray(image.resize(size, Image.Resampling.LANCZOS)) for size in SIZES]
    return out


def test_bundle_graph_equals_training_preprocessing_on_photos(frames: list[np.ndarray], tmp_path: Path) -> None:
    """Training stores Cropper's uint8 crop and normalises it; the bundle's graph must give exactly that."""
    write_preprocessing(IMAGENET, tmp_path)
    graph, cropper = Preprocessor(IMAGENET, tmp_path / IMAGENET.graph), Cropper(IMAGENET)
    for frame in frames:
        served = graph(frame)
        assert served.shape == (1, 3, 224, 224) and served.dtype == np.float32
        np.testing.assert_array_equal(served, IMAGENET.normalize(cropper(frame)))


def test_resize_and_crop_match_pillow_within_one_level(frames: list[np.ndarray]) -> None:
    """Against torchvision's Pillow path: the same antialiased bilinear filter, so at most 1 of 255 (rounding)."""
    cropper = Cropper(IMAGENET)
    diffs = [np.abs(cropper(f)[0].astype(int) - _pillow_reference(f, IMAGENET)) for f in frames]
    assert max(int(d.max()) for d in diffs) <= 1
    assert float(np.mean([d.mean() for d in diffs])) < 0.3


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_decode_converts_grey_palette_and_rgba_to_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = Image.fromarray(rgb[..., 0])
    assert np.array_equal(decode_image(_encode(grey, "PNG")), np.repeat(rgb[..., :1], 3, axis=-1))
    rgba = Image.fromarray(np.dstack([rgb, np.full((6, 5), 7, np.uint8)]))
    assert np.array_equal(decode_image(_encode(rgba, "PNG")), rgb)  # alpha dropped
    palette = Image.fromarray(rgb).convert("P")
    assert decode_image(_encode(palette, "PNG")).shape == (6, 5, 3)
    assert decode_image(_encode(Image.fromarray(rgb), "WEBP", lossless=True)).tolist() == rgb.tolist()


def test_decode_applies_exif_orientation() -> None:
    rgb = np.zeros((4, 8, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _encode(Image.fromarray(rgb), "JPEG", exif=exif.tobytes())
    assert decode_image(data).shape == (8, 4, 3)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\0" * 64])
def test_decode_names_an_unreadable_image(data: bytes) -> None:
    with pytest.raises(ImageError, match=r"photo\.jpg: not a readable image"):
        decode_image(data, "photo.jpg")


def _png(frame: np.ndarray) -> bytes:
    return _encode(Image.fromarray(frame), "PNG")


def test_edge_answers_frames_and_images_as_the_tensor(image_bundle: Bundle, rgb_digits) -> None:  # type: ignore[no-untyped-def]
    data, frames = rgb_digits
    runtime = EdgeRuntime(image_bundle, split=len(image_bundle.manifest.segments))
    for i in range(12):
        want = runtime.infer(data.x_test[i])
        for given in (frames["test"][i], _png(frames["test"][i])):
            got = runtime.infer(given)
            assert (got.label, got.source, got.exit) == (want.label, want.source, want.exit)
            np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-6, atol=1e-7)
    accuracy = np.mean([runtime.infer(_png(f)).label == y for f, y in zip(frames["test"], data.y_test, strict=True)])
    assert accuracy > 0.6  # a trained model (3 epochs, exits on), fed photos; chance is 0.1


def test_a_bundle_without_preprocessing_says_what_it_takes(bundle: Bundle) -> None:
    runtime = EdgeRuntime(bundle, split=len(bundle.manifest.segments))
    with pytest.raises(ImageError, match="this bundle has no image preprocessing"):
        runtime.infer(_png(np.zeros((8, 8, 3), np.uint8)))


@pytest.fixture()
def edge_stub(image_bundle: Bundle) -> Iterator[inference_pb2_grpc.GRPCInferenceServiceStub]:
    server = EdgeServer(EdgeRuntime(image_bundle, split=len(image_bundle.manifest.segments)), "127.0.0.1:0")
    port = server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    server.stop(grace=1.0)


def _infer(stub, model: str, name: str, x: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    request = pb.ModelInferRequest(model_name=model)
    add_input(request, name, x)
    return response_outputs(stub.ModelInfer(request, timeout=30))


def test_endpoint_takes_tensors_frames_and_encoded_images(edge_stub, image_bundle: Bundle, rgb_digits) -> None:  # type: ignore[no-untyped-def]
    data, frames = rgb_digits
    m = image_bundle.manifest
    meta = edge_stub.ModelMetadata(pb.ModelMetadataRequest(name=m.model), timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (m.input.name, "FP32", [-1, 3, 32, 32]), (FRAME, "UINT8", [-1, -1, -1, 3]), (IMAGE, "BYTES", [-1])
    ]  # fmt: skip
    want = _infer(edge_stub, m.model, m.input.name, data.x_test[:8])["label"]
    assert _infer(edge_stub, m.model, FRAME, frames["test"][:8])["label"].tolist() == want.tolist()
    images = np.empty(8, dtype=object)
    images[:] = [_png(f) for f in frames["test"][:8]]
    assert _infer(edge_stub, m.model, IMAGE, images)["label"].tolist() == want.tolist()


@pytest.mark.parametrize(
    ("name", "x", "message"),
    [
        (IMAGE, np.array([b"garbage"], dtype=object), "input 'image': image: not a readable image"),
        (FRAME, np.zeros((2, 8, 8, 4), np.uint8), r"a uint8 RGB frame \[H, W, 3\].*got uint8 \[2, 8, 8, 4\]"),
        (FRAME, np.zeros((2, 8, 8, 3), np.float32), "expected one input"),
        ("pixels", np.zeros((2, 8, 8, 3), np.uint8), "'frame' UINT8 \\[-1, -1, -1, 3\\] or 'image' BYTES"),
    ],
)
def test_endpoint_refuses_bad_images_and_keeps_serving(
    edge_stub, image_bundle: Bundle, rgb_digits, name, x, message
) -> None:  # type: ignore[no-untyped-def]
    m = image_bundle.manifest
    with pytest.raises(grpc.RpcError) as err:
        _infer(edge_stub, m.model, name, x)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, err.value.details()), err.value.details()
    assert _infer(edge_stub, m.model, FRAME, rgb_digits[1]["test"][:2])["label"].shape == (2,)


def test_edge_cli_answers_a_directory_of_photos(image_bundle: Bundle, rgb_digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, frames = rgb_digits
    for i in range(3):
        (tmp_path / f"digit{i}.png").write_bytes(_png(frames["test"][i]))
    (tmp_path / "notes.txt").write_text("not a photo")
    cli = [sys.executable, "-m", "split.cli", "edge", "--bundle", str(image_bundle.root), "--input"]
    out = subprocess.run([*cli, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["digit0.png", "digit1.png", "digit2.png"]
    runtime = EdgeRuntime(image_bundle, split=len(image_bundle.manifest.segments))
    assert [r[1] for r in rows] == [
        image_bundle.manifest.classes[runtime.infer(data.x_test[i]).label] for i in range(3)
    ]
    one = subprocess.run([*cli, str(tmp_path / "digit1.png")], capture_output=True, text=True, timeout=120, check=True)
    assert one.stdout.splitlines() == [out.splitlines()[1]]
    bad = subprocess.run([*cli, str(tmp_path / "notes.txt")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "expected an .npy file, a photo" in bad.stderr
