"""Split point 0's image codecs on real parts: a CloudServer on 127.0.0.1:0 and an EdgeRuntime that sends the frame
as PNG or JPEG; the cloud decodes, preprocesses and runs the full model. Bad bytes are INVALID_ARGUMENT and the
server keeps serving; the profile measures the codecs and the planner lists them."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from cloud.server import CloudConfig, CloudServer
from edge.client import CloudClient
from edge.errors import EdgeError
from edge.planner import Network, candidates, cost_model
from edge.runtime import EdgeRuntime
from protos import inference_pb2 as pb
from protos import params
from protos.bundle import IMAGE_FORMATS, Bundle
from protos.byte_tensors import from_items
from protos.codecs import IMAGE_INPUT
from protos.inference_pb2_grpc import GRPCInferenceServiceStub
from protos.preprocessing import ImageError
from protos.tensors import add_input, response_outputs, set_param
from split.profile import profile_bundle


@pytest.fixture(scope="module")
def target(image_bundle: Bundle) -> Iterator[str]:
    server = CloudServer(CloudConfig(bundles=(str(image_bundle.root),), port=0, threads=1))
    port = server.start()
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    yield address
    server.stop(grace=1.0)


@pytest.fixture(scope="module")
def client(target: str, image_bundle: Bundle) -> Iterator[CloudClient]:
    m = image_bundle.manifest
    cloud = CloudClient(target, model=m.model, bundle_hash=m.content_hash)
    yield cloud
    cloud.close()


@pytest.fixture(scope="module")
def test_frames(rgb_digits) -> np.ndarray:  # type: ignore[no-untyped-def]
    return rgb_digits[1]["test"][:30]


def _runtime(bundle: Bundle, client: CloudClient, codec: str) -> EdgeRuntime:
    return EdgeRuntime(bundle, split=0, cloud=client, codec=codec, exits=False, deadline_ms=5000)


def test_export_declares_the_image_codecs_at_split_point_0_only(image_bundle: Bundle, bundle: Bundle) -> None:
    points = image_bundle.manifest.split_points
    assert points[0].images == IMAGE_FORMATS and all(not sp.images for sp in points[1:])
    assert not bundle.manifest.split_points[0].images  # no image preprocessing, no image codecs


def test_png_answers_equal_the_cloud_only_fp32_answers(
    image_bundle: Bundle, client: CloudClient, test_frames: np.ndarray
) -> None:
    png, fp32 = _runtime(image_bundle, client, "png"), _runtime(image_bundle, client, "fp32")
    for frame in test_frames:
        a, b = png.infer(frame), fp32.infer(frame)
        assert (a.source, a.codec, a.split, a.degraded) == ("cloud", "png", 0, None)
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-5)  # lossless, same graph
    assert png.stats()["answers"]["cloud"] == len(test_frames)


def test_jpeg_answers_mostly_agree_and_encoded_input_is_re_encoded(
    image_bundle: Bundle, client: CloudClient, test_frames: np.ndarray
) -> None:
    jpeg, fp32 = _runtime(image_bundle, client, "jpeg90"), _runtime(image_bundle, client, "fp32")
    answers = [jpeg.infer(frame) for frame in test_frames]
    agree = np.mean([a.label == fp32.infer(f).label for a, f in zip(answers, test_frames, strict=True)])
    assert agree >= 0.9 and all(a.codec == "jpeg90" and a.source == "cloud" for a in answers)
    photo = io.BytesIO()
    Image.fromarray(test_frames[0]).save(photo, "PNG")  # an encoded image handed to the edge: sent as jpeg90
    assert jpeg.infer(photo.getvalue()).label == answers[0].label


def test_the_edge_says_what_an_image_codec_needs(image_bundle: Bundle, bundle: Bundle, client: CloudClient) -> None:
    jpeg = _runtime(image_bundle, client, "jpeg90")
    with pytest.raises(ImageError, match="model-ready tensor cannot be sent as an image"):
        jpeg.infer(np.zeros(image_bundle.manifest.input.sample_shape, np.float32))
    with pytest.raises(EdgeError, match="split point 0"):
        EdgeRuntime(image_bundle, split=1, cloud=client, codec="jpeg90")
    with pytest.raises(EdgeError, match="take none"):
        EdgeRuntime(bundle, split=0, cloud=client, codec="png")


def test_a_cloud_that_fails_leaves_the_frame_to_the_edge(image_bundle: Bundle, test_frames: np.ndarray) -> None:
    m = image_bundle.manifest
    down = CloudClient("127.0.0.1:1", model=m.model, bundle_hash=m.content_hash, timeout_s=0.5)
    local = EdgeRuntime(image_bundle, split=len(m.segments), exits=False)
    jpeg = EdgeRuntime(image_bundle, split=0, cloud=down, codec="jpeg90", exits=False, deadline_ms=300)
    answer = jpeg.infer(test_frames[0])
    assert answer.degraded is not None and answer.source == "edge"
    assert answer.label == local.infer(test_frames[0]).label  # the edge preprocessed its own frame after all
    down.close()


def _image_request(bundle: Bundle, items: list[bytes], codec: str = "jpeg90", split: int = 0) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=bundle.manifest.model)
    add_input(request, IMAGE_INPUT, from_items(items, (len(items),)))
    set_param(request.parameters, params.BUNDLE_HASH, bundle.manifest.content_hash)
    set_param(request.parameters, params.SPLIT_POINT, split)
    set_param(request.parameters, params.CODEC, codec)
    return request


def test_bad_bytes_are_invalid_argument_and_the_server_keeps_serving(
    image_bundle: Bundle, target: str, test_frames: np.ndarray
) -> None:
    good, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(test_frames[0]).save(good, "JPEG", quality=90)
    Image.fromarray(test_frames[0]).save(png, "PNG")
    bad = [
        (_image_request(image_bundle, [good.getvalue(), b"not an image"]), "image[1]: not a readable JPEG image"),
        (_image_request(image_bundle, [good.getvalue()[:40]]), "image[0]"),  # truncated
        (_image_request(image_bundle, [png.getvalue()]), "not a readable JPEG image"),  # PNG sent as jpeg90
        (_image_request(image_bundle, [good.getvalue()], "jpeg101"), "unknown codec 'jpeg101'"),
        (_image_request(image_bundle, [good.getvalue()], split=1), "only split point 0"),
    ]
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for request, message in bad:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in info.value.details()
            reply = stub.ModelInfer(_image_request(image_bundle, [good.getvalue()] * 2), timeout=10)
            logits = response_outputs(reply)[image_bundle.manifest.output.name]
            assert logits.shape == (2, len(image_bundle.manifest.classes))


def test_profile_measures_the_image_codecs_and_the_planner_lists_them(
    image_bundle: Bundle, rgb_digits: tuple[Any, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    data, frames = rgb_digits
    root = tmp_path_factory.mktemp("profiled-images") / "bundle"
    shutil.copytree(image_bundle.root, root)
    codecs = ("fp32", "int8")
    m = profile_bundle(Bundle.load(root), data.x_cal, data.y_cal, runs=3, codecs=codecs, frames=list(frames["cal"]))
    wire = m.split_point(0).cost["wire"]  # type: ignore[index]
    assert set(wire) == {*codecs, "jpeg90", "png"}
    for name in ("jpeg90", "png"):
        assert set(wire[name]) == set(wire["fp32"])  # the same shape as a tensor codec's
        assert wire[name]["bytes"] > 0 and wire[name]["encode_ms"] > 0 and wire[name]["decode_ms"] > 0
    assert wire["png"]["accuracy"] == wire["fp32"]["accuracy"]  # lossless: the same inputs to the same tail
    assert abs(wire["jpeg90"]["accuracy"] - wire["fp32"]["accuracy"]) <= 0.1
    assert wire["jpeg90"]["bytes"] < wire["fp32"]["bytes"] and m.profile["preprocess_ms"] > 0
    assert all("jpeg90" not in (sp.cost or {}).get("wire", {}) for sp in m.split_points[1:])
    costs = cost_model(Bundle.load(root).manifest)
    listed = {(c.split, c.codec) for c in candidates(costs, Network(1e7, 20.0))}
    assert {(0, "jpeg90"), (0, "png"), (0, "fp32")} <= listed
