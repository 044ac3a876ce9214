"""numpy ⇄ KServe v2 tensor conversion: round trips, zero-copy decoding, every malformed-tensor error."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protos import inference_pb2
from protos.tensors import (
    DATATYPES,
    TensorFormatError,
    add_input,
    add_output,
    datatype_of,
    get_param,
    request_inputs,
    response_outputs,
    set_param,
)

# The typed contents field of each datatype, as the Open Inference Protocol specifies it.
TYPED_FIELDS = {
    **dict.fromkeys(["INT8", "INT16", "INT32"], "int_contents"),
    **dict.fromkeys(["UINT8", "UINT16", "UINT32"], "uint_contents"),
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Values that use the dtype's extremes, so a narrowing or sign bug shows up."""
    dtype = DATATYPES[datatype]
    count = int(np.prod(shape))
    if dtype.kind == "b":
        return (np.arange(count) % 2 == 0).reshape(shape)
    if dtype.kind == "f":
        return np.linspace(-3.5, 7.25, count, dtype=dtype).reshape(shape)
    info = np.iinfo(dtype)
    values = np.resize(np.array([info.min, info.max, 0, 1], dtype=dtype), count)
    return values.reshape(shape)


def _typed_request(name: str, datatype: str, shape: list[int], **contents: Any) -> inference_pb2.ModelInferRequest:
    request = inference_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(
        name=name, datatype=datatype, shape=shape, contents=inference_pb2.InferTensorContents(**contents)
    )
    return request


def _raw_request(datatype: str, shape: list[int], data: bytes, name: str = "x") -> inference_pb2.ModelInferRequest:
    request = inference_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


def _base_object(array: np.ndarray) -> object:
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def test_datatypes_are_the_twelve_little_endian_kserve_types() -> None:
    assert set(DATATYPES) == {*TYPED_FIELDS, "FP16"} and len(DATATYPES) == 12
    assert all(dtype == dtype.newbyteorder("<") for dtype in DATATYPES.values())


@pytest.mark.parametrize("name", list(DATATYPES))
def test_datatype_of_inverts_datatypes(name: str) -> None:
    assert datatype_of(DATATYPES[name]) == name
    assert datatype_of(DATATYPES[name].newbyteorder(">")) == name


@pytest.mark.parametrize(
    ("kind", "name"), [(np.float32, "FP32"), (bool, "BOOL"), (np.uint16, "UINT16"), (float, "FP64")]
)
def test_datatype_of_accepts_python_and_numpy_types(kind: type, name: str) -> None:
    assert datatype_of(kind) == name


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype("U3"), np.dtype(object), np.dtype([("a", "<f4")])])
def test_datatype_of_rejects_unsupported(dtype: object) -> None:
    with pytest.raises(TensorFormatError, match="supported: BOOL, UINT8"):
        datatype_of(dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_round_trip_request(datatype: str) -> None:
    array = _sample(datatype)
    request = inference_pb2.ModelInferRequest()
    add_input(request, "x", array)
    wire = inference_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert wire.inputs[0].datatype == datatype
    assert list(wire.inputs[0].shape) == [2, 3]
    decoded = request_inputs(wire)["x"]
    assert decoded.dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_round_trip_response(datatype: str) -> None:
    array = _sample(datatype, (4,))
    response = inference_pb2.ModelInferResponse()
    add_output(response, "y", array)
    decoded = response_outputs(inference_pb2.ModelInferResponse.FromString(response.SerializeToString()))
    assert decoded["y"].dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded["y"], array)


@pytest.mark.parametrize(("datatype", "field"), TYPED_FIELDS.items())
def test_typed_contents_round_trip(datatype: str, field: str) -> None:
    array = _sample(datatype)
    request = _typed_request("x", datatype, [2, 3], **{field: array.ravel().tolist()})
    decoded = request_inputs(inference_pb2.ModelInferRequest.FromString(request.SerializeToString()))["x"]
    assert decoded.dtype == DATATYPES[datatype]
    assert decoded.shape == (2, 3)
    np.testing.assert_array_equal(decoded, array)


def test_typed_response_outputs() -> None:
    response = inference_pb2.ModelInferResponse()
    response.outputs.add(
        name="scores",
        datatype="FP32",
        shape=[1, 2],
        contents=inference_pb2.InferTensorContents(fp32_contents=[0.25, 0.75]),
    )
    np.testing.assert_array_equal(response_outputs(response)["scores"], np.array([[0.25, 0.75]], dtype=np.float32))


def test_inputs_keep_request_order_and_scalar_and_empty_shapes() -> None:
    request = inference_pb2.ModelInferRequest()
    add_input(request, "b", np.asarray(2.5))
    add_input(request, "a", np.zeros((0, 4), dtype=np.int32))
    add_input(request, "c", np.ones(3, dtype=np.uint8))
    decoded = request_inputs(request)
    assert list(decoded) == ["b", "a", "c"]
    assert decoded["b"].shape == () and decoded["b"] == 2.5
    assert decoded["a"].shape == (0, 4) and decoded["a"].dtype == np.int32
    assert list(request.inputs[0].shape) == []


def test_add_input_makes_non_contiguous_and_big_endian_arrays_contiguous_little_endian() -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    view = base[::2, 1::2].T
    assert not view.flags.c_contiguous
    request = inference_pb2.ModelInferRequest()
    add_input(request, "x", view)
    assert request.raw_input_contents[0] == np.ascontiguousarray(view, dtype="<f4").tobytes()
    assert list(request.inputs[0].shape) == [3, 2]
    np.testing.assert_array_equal(request_inputs(request)["x"], view)


def test_raw_inputs_are_read_only_views_of_the_raw_bytes() -> None:
    data = np.arange(6, dtype="<f4").tobytes()
    decoded = request_inputs(_raw_request("FP32", [2, 3], data))["x"]
    owner = _base_object(decoded)
    assert isinstance(owner, bytes)
    assert owner == data
    assert not decoded.flags.owndata
    assert decoded.flags.writeable is False
    assert np.shares_memory(decoded, np.frombuffer(owner, dtype=np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        decoded[0, 0] = 1.0


def test_raw_outputs_are_read_only_views() -> None:
    response = inference_pb2.ModelInferResponse()
    add_output(response, "y", np.arange(4, dtype=np.int64))
    decoded = response_outputs(response)["y"]
    assert isinstance(_base_object(decoded), bytes)
    assert decoded.flags.writeable is False


def test_unknown_datatype() -> None:
    with pytest.raises(TensorFormatError, match=r"input 'x' has datatype 'FP8'; supported: BOOL, .*FP64"):
        request_inputs(_raw_request("FP8", [1], b"\x00"))


def test_bytes_typed_contents() -> None:
    decoded = request_inputs(_typed_request("s", "BYTES", [2], bytes_contents=[b"hi", b""]))["s"]
    assert decoded.dtype == object and decoded.shape == (2,)
    assert [bytes(b) for b in decoded] == [b"hi", b""]


def test_bytes_raw_round_trip_is_length_prefixed() -> None:
    """KServe's binary BYTES layout: a 4-byte little-endian length before each element; views, not copies."""
    images = np.empty(3, dtype=object)
    images[:] = [b"\xff\xd8jpeg", b"", bytes(range(256)) * 3]
    request = inference_pb2.ModelInferRequest(model_name="m")
    add_input(request, "image", images)
    assert request.inputs[0].datatype == "BYTES" and list(request.inputs[0].shape) == [3]
    assert request.raw_input_contents[0][:4] == (6).to_bytes(4, "little")
    decoded = request_inputs(inference_pb2.ModelInferRequest.FromString(request.SerializeToString()))["image"]
    assert [bytes(b) for b in decoded] == list(images)
    assert isinstance(decoded[0], memoryview)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x05\x00", "end inside element 0's 4-byte length"),
        (b"\x09\x00\x00\x00abc", "element 0 declares 9 bytes but 3 remain"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00bZZ", "2 bytes left after the 2 declared"),
    ],
)
def test_bytes_raw_malformed(data: bytes, match: str) -> None:
    with pytest.raises(TensorFormatError, match=match):
        request_inputs(_raw_request("BYTES", [2] if b"b" in data else [1], data))


def test_bytes_elements_must_be_bytes() -> None:
    with pytest.raises(TensorFormatError, match="holds bytes, got an element of type int"):
        add_input(inference_pb2.ModelInferRequest(), "image", np.array([1, b"x"], dtype=object))


def test_negative_dimension() -> None:
    with pytest.raises(TensorFormatError, match=r"input 'x' has shape \[-1, 3\]; every dimension must be >= 0"):
        request_inputs(_raw_request("FP32", [-1, 3], b""))


@pytest.mark.parametrize("size", [11, 13, 0])
def test_raw_byte_count_must_match_exactly(size: int) -> None:
    with pytest.raises(TensorFormatError, match=rf"input 'x' has {size} raw bytes; .* needs exactly 12 \(3 x 4\)"):
        request_inputs(_raw_request("INT32", [3], b"\x01" * size))


def test_raw_output_byte_count_too_long() -> None:
    response = inference_pb2.ModelInferResponse()
    response.outputs.add(name="y", datatype="FP64", shape=[2])
    response.raw_output_contents.append(b"\x00" * 24)
    with pytest.raises(TensorFormatError, match="output 'y' has 24 raw bytes"):
        response_outputs(response)


def test_raw_entry_count_must_equal_input_count() -> None:
    request = _raw_request("FP32", [1], b"\x00" * 4)
    request.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(TensorFormatError, match="raw_input_contents has 1 entries but there are 2 inputs"):
        request_inputs(request)


def test_raw_entries_without_inputs() -> None:
    response = inference_pb2.ModelInferResponse()
    response.raw_output_contents.append(b"\x00")
    with pytest.raises(TensorFormatError, match="raw_output_contents has 1 entries but there are 0 outputs"):
        response_outputs(response)


def test_raw_and_contents_together() -> None:
    request = _raw_request("FP32", [1], b"\x00" * 4)
    request.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(TensorFormatError, match="input 'x' sets contents while raw_input_contents is used"):
        request_inputs(request)


def test_fp16_has_no_typed_contents() -> None:
    with pytest.raises(TensorFormatError, match="input 'h' is FP16, which has no typed contents field; send it in raw"):
        request_inputs(_typed_request("h", "FP16", [1], fp32_contents=[1.0]))


def test_typed_value_count_must_match_shape() -> None:
    with pytest.raises(TensorFormatError, match=r"input 'x' has 2 values in contents.fp32_contents; .* exactly 3"):
        request_inputs(_typed_request("x", "FP32", [3], fp32_contents=[1.0, 2.0]))


def test_typed_values_in_the_wrong_field() -> None:
    with pytest.raises(TensorFormatError, match=r"0 values in contents\.int64_contents"):
        request_inputs(_typed_request("x", "INT64", [2], int_contents=[1, 2]))


@pytest.mark.parametrize(
    ("datatype", "field", "value"), [("INT8", "int_contents", 128), ("UINT16", "uint_contents", 70000)]
)
def test_typed_values_out_of_range(datatype: str, field: str, value: int) -> None:
    with pytest.raises(TensorFormatError, match=f"outside the {datatype} range"):
        request_inputs(_typed_request("x", datatype, [1], **{field: [value]}))


def test_huge_declared_shape_is_rejected_before_allocating() -> None:
    huge = 1 << 40
    with pytest.raises(TensorFormatError, match=rf"= {huge * huge} elements; at most {1 << 28} are accepted"):
        request_inputs(_raw_request("FP64", [huge, huge], b""))


def test_max_elements_is_configurable() -> None:
    request = _raw_request("UINT8", [2, 3], bytes(6))
    assert request_inputs(request, max_elements=6)["x"].shape == (2, 3)
    with pytest.raises(TensorFormatError, match="at most 5 are accepted"):
        request_inputs(request, max_elements=5)
    with pytest.raises(TensorFormatError, match="at most 5 are accepted"):
        request_inputs(_typed_request("x", "FP32", [6], fp32_contents=[0.0] * 6), max_elements=5)


def test_duplicate_input_names() -> None:
    request = _raw_request("UINT8", [1], b"\x01")
    request.inputs.add(name="x", datatype="UINT8", shape=[1])
    request.raw_input_contents.append(b"\x02")
    with pytest.raises(TensorFormatError, match="input 'x' appears more than once"):
        request_inputs(request)


def test_add_input_rejects_duplicate_names_and_typed_requests() -> None:
    request = inference_pb2.ModelInferRequest()
    add_input(request, "x", np.zeros(2, dtype=np.float32))
    with pytest.raises(TensorFormatError, match="input 'x' is already present"):
        add_input(request, "x", np.zeros(2, dtype=np.float32))
    typed = _typed_request("t", "FP32", [1], fp32_contents=[1.0])
    with pytest.raises(TensorFormatError, match="typed contents"):
        add_input(typed, "y", np.zeros(1, dtype=np.float32))
    assert len(request.inputs) == len(request.raw_input_contents) == 1


def test_add_output_rejects_unsupported_dtype() -> None:
    response = inference_pb2.ModelInferResponse()
    with pytest.raises(TensorFormatError, match="complex128 has no KServe datatype"):
        add_output(response, "y", np.zeros(2, dtype=np.complex128))
    assert len(response.outputs) == 0 and len(response.raw_output_contents) == 0


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "bool_param"),
        (False, "bool_param"),
        (0, "int64_param"),
        (-(1 << 63), "int64_param"),
        ((1 << 63) - 1, "int64_param"),
        (1 << 63, "uint64_param"),
        ((1 << 64) - 1, "uint64_param"),
        (0.5, "double_param"),
        ("sha256:abc", "string_param"),
        ("", "string_param"),
    ],
)
def test_param_round_trip(value: bool | int | float | str, field: str) -> None:
    request = inference_pb2.ModelInferRequest()
    set_param(request.parameters, "k", value)
    wire = inference_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert wire.parameters["k"].WhichOneof("parameter_choice") == field
    got = get_param(wire.parameters, "k")
    assert got == value and type(got) is type(value)


def test_bool_is_not_stored_as_int() -> None:
    params = inference_pb2.ModelInferRequest().parameters
    set_param(params, "flag", True)
    set_param(params, "one", 1)
    assert get_param(params, "flag") is True
    assert get_param(params, "one") == 1 and get_param(params, "one") is not True


def test_set_param_overwrites_the_previous_kind() -> None:
    params = inference_pb2.ModelInferRequest().parameters
    set_param(params, "k", "text")
    set_param(params, "k", 2.0)
    assert params["k"].WhichOneof("parameter_choice") == "double_param"
    assert get_param(params, "k") == 2.0


def test_set_param_accepts_numpy_scalars() -> None:
    params = inference_pb2.ModelInferRequest().parameters
    set_param(params, "i", np.int32(7))  # type: ignore[arg-type]
    set_param(params, "f", np.float32(0.5))  # type: ignore[arg-type]
    set_param(params, "b", np.bool_(True))  # type: ignore[arg-type]
    assert [params[k].WhichOneof("parameter_choice") for k in "ifb"] == [
        "int64_param",
        "double_param",
        "bool_param",
    ]


def test_set_param_rejects_bad_values() -> None:
    params = inference_pb2.ModelInferRequest().parameters
    with pytest.raises(ValueError, match="outside the int64/uint64 range"):
        set_param(params, "k", 1 << 64)
    with pytest.raises(ValueError, match="outside the int64/uint64 range"):
        set_param(params, "k", -(1 << 63) - 1)
    with pytest.raises(TypeError, match="parameter 'k': bytes is not one of bool, int, float, str"):
        set_param(params, "k", b"raw")  # type: ignore[arg-type]


def test_get_param_default_does_not_insert_the_key() -> None:
    params = inference_pb2.ModelInferRequest().parameters
    sentinel = object()
    assert get_param(params, "missing") is None
    assert get_param(params, "missing", sentinel) is sentinel
    assert "missing" not in params
    params["empty"].SetInParent()
    assert get_param(params, "empty", 3) == 3


def test_tensor_parameters_use_the_same_helpers() -> None:
    request = inference_pb2.ModelInferRequest()
    add_input(request, "x", np.zeros(1, dtype=np.float32))
    set_param(request.inputs[0].parameters, "edgesplit.scale", 0.125)
    assert get_param(request.inputs[0].parameters, "edgesplit.scale") == 0.125
