"""Wire codecs: round trips within stated error bounds, lossless compression, refusals of bad frames."""

from __future__ import annotations

import numpy as np
import pytest

from protos import inference_pb2 as pb
from protos.bundle import TensorSpec
from protos.codecs import CODECS, Codec, decode, dequantize, encode, wire_inputs
from protos.compression import compress, decompress
from protos.tensors import TensorFormatError, add_input, request_inputs


@pytest.fixture()
def x() -> np.ndarray:
    rng = np.random.default_rng(0)
    # A feature map like the ones at split points: channels on very different scales, some negative.
    scales = np.array([0.1, 1.0, 5.0, 20.0], dtype=np.float32)[None, :, None, None]
    return (rng.standard_normal((1, 4, 6, 6)).astype(np.float32) * scales + 0.5).astype(np.float32)


def test_fp32_is_exact_and_fp16_within_half_an_ulp(x: np.ndarray) -> None:
    assert np.array_equal(decode("fp32", "b", encode(Codec("fp32"), "b", x)), x)
    y = decode("fp16", "b", encode(Codec("fp16"), "b", x))
    # float16 keeps 11 significant bits: relative error at most 2**-11 in the normal range.
    np.testing.assert_allclose(y, x, rtol=2**-11, atol=0)


@pytest.mark.parametrize("fmt", ["int8", "int8c"])
def test_int8_error_is_at_most_half_a_step(x: np.ndarray, fmt: str) -> None:
    wire = encode(Codec(fmt), "b", x)
    assert wire["b"].dtype == np.int8 and list(wire) == list(wire_inputs(fmt, "b"))
    step = wire["b_scale"].reshape((1, -1, 1, 1) if fmt == "int8c" else (1, 1, 1, 1))
    assert np.all(np.abs(decode(fmt, "b", wire) - x) <= step / 2 + 1e-6 * np.abs(x))


def test_per_channel_beats_per_tensor_on_channels_of_different_scales(x: np.ndarray) -> None:
    err = {f: np.abs(decode(f, "b", encode(Codec(f), "b", x)) - x)[:, 0].max() for f in ("int8", "int8c")}
    assert err["int8c"] < err["int8"] / 10  # the small-scale channel gets its own step


def test_int8_keeps_zero_exact_and_handles_constant_tensors() -> None:
    relu = np.maximum(np.linspace(-1, 1, 32, dtype=np.float32), 0).reshape(1, 2, 4, 4)
    assert np.all(decode("int8", "b", encode(Codec("int8"), "b", relu))[relu == 0] == 0)
    flat = np.zeros((1, 2, 3, 3), dtype=np.float32)
    assert np.array_equal(decode("int8c", "b", encode(Codec("int8c"), "b", flat)), flat)


def test_int8_sends_a_quarter_of_the_bytes(x: np.ndarray) -> None:
    big = np.repeat(x, 4, axis=2)  # 4 x 24 x 6 = 576 values
    sent = sum(t.nbytes for t in encode(Codec("int8"), "b", big).values())
    assert sent == big.size + 4 + 1  # int8 values, one float32 scale, one int8 zero point


BOUNDARY = TensorSpec("b", (-1, 2, 4, 4), "UINT8", scale=0.05, zero_point=3)  # an int8 edge's uint8 boundary


def test_a_quantized_boundary_goes_out_as_int8_without_requantizing() -> None:
    q = np.arange(32, dtype=np.uint8).reshape(1, 2, 4, 4) * 8  # 0 .. 248: both ends of the uint8 range
    wire = encode(Codec("int8"), "b", q, BOUNDARY)
    assert wire["b"].dtype == np.int8 and np.array_equal(wire["b"].astype(np.int16), q.astype(np.int16) - 128)
    assert wire["b_scale"].tolist() == [np.float32(0.05)] and wire["b_zero_point"].tolist() == [3 - 128]
    # the tail reads exactly the values the edge computed: no second rounding
    assert np.array_equal(decode("int8", "b", wire), dequantize(q, BOUNDARY))
    assert np.array_equal(dequantize(q, BOUNDARY), (q.astype(np.float32) - 3) * np.float32(0.05))


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "int8c"])
def test_other_formats_send_a_quantized_boundary_s_float_value(fmt: str) -> None:
    q = np.arange(32, dtype=np.uint8).reshape(1, 2, 4, 4)
    real = dequantize(q, BOUNDARY)
    wire = encode(Codec(fmt), "b", q, BOUNDARY)
    assert all(np.array_equal(wire[k], v) for k, v in encode(Codec(fmt), "b", real).items())


def test_a_float_boundary_ignores_the_spec(x: np.ndarray) -> None:
    spec = TensorSpec("b", (-1, 4, 6, 6))
    assert dequantize(x, spec) is x
    plain = encode(Codec("int8"), "b", x)
    assert all(np.array_equal(encode(Codec("int8"), "b", x, spec)[k], v) for k, v in plain.items())


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_compressors_round_trip_and_shrink_sparse_tensors(compressor: str) -> None:
    sparse = np.maximum(np.random.default_rng(1).standard_normal(4096), 1.5).astype(np.float32).tobytes()
    frame = compress(compressor, sparse)
    assert len(frame) < len(sparse) / 2
    assert decompress(compressor, frame, len(sparse)) == sparse


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_a_frame_larger_than_declared_is_refused(compressor: str) -> None:
    bomb = compress(compressor, bytes(1 << 20))  # 1 MiB of zeros, a few hundred bytes compressed
    with pytest.raises(TensorFormatError, match="1024"):
        decompress(compressor, bomb, 1024)


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_garbage_and_truncated_frames_are_refused(compressor: str) -> None:
    frame = compress(compressor, bytes(range(256)) * 16)
    with pytest.raises(TensorFormatError):
        decompress(compressor, b"not a frame at all", 4096)
    with pytest.raises(TensorFormatError):
        decompress(compressor, frame[: len(frame) // 2], 4096)


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_survives_a_request_round_trip(x: np.ndarray, codec: str) -> None:
    c = Codec.parse(codec)
    request = pb.ModelInferRequest(model_name="m")
    wire = encode(c, "b", x)
    for i, (name, array) in enumerate(wire.items()):
        add_input(request, name, array, c.compressor if i == 0 else None)
    decoded = request_inputs(request)
    assert list(decoded) == list(wire)
    for name, array in wire.items():
        assert decoded[name].dtype == array.dtype and np.array_equal(decoded[name], array)


def test_compressed_input_with_wrong_declared_shape_is_refused(x: np.ndarray) -> None:
    request = pb.ModelInferRequest(model_name="m")
    add_input(request, "b", x, "zstd")
    request.inputs[0].shape[:] = [1, 4, 6, 5]
    with pytest.raises(TensorFormatError, match="'b'"):
        request_inputs(request)


@pytest.mark.parametrize("bad", ["int4", "fp32+gzip", "int8+", "+zstd"])
def test_unknown_codec_lists_the_valid_ones(bad: str) -> None:
    with pytest.raises(ValueError, match="valid codecs: fp32, fp32\\+zstd"):
        Codec.parse(bad)
