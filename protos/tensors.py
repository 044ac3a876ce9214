"""numpy ⇄ KServe v2 tensor conversion: the one place that reads and writes tensor messages.

Protobuf tensor types stop here: callers hand in a request or response message and get named numpy arrays
back, or hand in arrays and get them appended. Raw contents (``raw_input_contents`` /
``raw_output_contents``) are decoded as zero-copy, read-only views; typed ``contents`` are accepted too.
Every malformed tensor raises :class:`TensorFormatError`, whose message names the tensor, what is wrong and
what would be valid.

Example:
    >>> import numpy as np
    >>> from protos import inference_pb2
    >>> request = inference_pb2.ModelInferRequest(model_name="resnet")
    >>> add_input(request, "x", np.zeros((1, 3), dtype=np.float32))
    >>> set_param(request.parameters, "edgesplit.split_point", 2)
    >>> request_inputs(request)["x"].shape, get_param(request.parameters, "edgesplit.split_point")
    ((1, 3), 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from protos.byte_tensors import BYTES, from_items, pack, unpack

if TYPE_CHECKING:
    from protos import inference_pb2

__all__ = [
    "DATATYPES",
    "TensorFormatError",
    "add_input",
    "add_output",
    "datatype_of",
    "get_param",
    "request_inputs",
    "response_outputs",
    "set_param",
]

DATATYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype("<u1"),
        "UINT16": np.dtype("<u2"),
        "UINT32": np.dtype("<u4"),
        "UINT64": np.dtype("<u8"),
        "INT8": np.dtype("<i1"),
        "INT16": np.dtype("<i2"),
        "INT32": np.dtype("<i4"),
        "INT64": np.dtype("<i8"),
        "FP16": np.dtype("<f2"),
        "FP32": np.dtype("<f4"),
        "FP64": np.dtype("<f8"),
    }
)
"""KServe datatype name -> little-endian numpy dtype, for every datatype edgesplit carries."""

_BY_KIND_SIZE = {(dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items()}

# Datatype -> (InferTensorContents field, dtype the field's values arrive in). FP16 has no typed field.
_TYPED_FIELDS: Mapping[str, tuple[str, np.dtype]] = MappingProxyType(
    {
        "BOOL": ("bool_contents", np.dtype(np.bool_)),
        "UINT8": ("uint_contents", np.dtype(np.uint32)),
        "UINT16": ("uint_contents", np.dtype(np.uint32)),
        "UINT32": ("uint_contents", np.dtype(np.uint32)),
        "UINT64": ("uint64_contents", np.dtype(np.uint64)),
        "INT8": ("int_contents", np.dtype(np.int32)),
        "INT16": ("int_contents", np.dtype(np.int32)),
        "INT32": ("int_contents", np.dtype(np.int32)),
        "INT64": ("int64_contents", np.dtype(np.int64)),
        "FP32": ("fp32_contents", np.dtype(np.float32)),
        "FP64": ("fp64_contents", np.dtype(np.float64)),
    }
)

_COMPRESSION = "edgesplit.compression"  # protos.params.COMPRESSION (a tensor parameter)
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1
_VALID_NAMES = ", ".join([*DATATYPES, "BYTES"])


class TensorFormatError(ValueError):
    """A tensor message (or an array to encode) is malformed or unsupported."""


def datatype_of(dtype: np.dtype | type) -> str:
    """Return the KServe datatype name of a numpy dtype (either byte order).

    Args:
        dtype: A numpy dtype, or anything ``np.dtype`` accepts (``np.float32``, ``bool``, ...).

    Returns:
        The KServe name, e.g. ``"FP32"``.

    Raises:
        TensorFormatError: the dtype has no KServe datatype that edgesplit carries.

    Example:
        >>> datatype_of(np.float32), datatype_of(np.dtype(">i8"))
        ('FP32', 'INT64')
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TensorFormatError(f"{dtype!r} is not a numpy dtype; supported: {_VALID_NAMES}") from exc
    name = _BY_KIND_SIZE.get((resolved.kind, resolved.itemsize))
    if name is None:
        raise TensorFormatError(f"numpy dtype {resolved} has no KServe datatype; supported: {_VALID_NAMES}")
    return name


def request_inputs(request: inference_pb2.ModelInferRequest, *, max_elements: int = 1 << 28) -> dict[str, np.ndarray]:
    """Decode every input tensor of a request, by name, in request order.

    Raw inputs come back as zero-copy, read-only views of the bytes protobuf hands out; typed ``contents``
    come back as new arrays.

    Args:
        request: The inference request.
        max_elements: The largest element count accepted for one tensor, checked before any allocation.

    Returns:
        Input name -> array with the declared shape and the datatype's little-endian dtype.

    Raises:
        TensorFormatError: a datatype, shape, size, name or contents layout is invalid.
    """
    return _decode(request.inputs, request.raw_input_contents, "input", max_elements)


def response_outputs(
    response: inference_pb2.ModelInferResponse, *, max_elements: int = 1 << 28
) -> dict[str, np.ndarray]:
    """Decode every output tensor of a response, by name, in response order.

    Same rules as :func:`request_inputs`, for ``outputs`` and ``raw_output_contents``.

    Args:
        response: The inference response.
        max_elements: The largest element count accepted for one tensor, checked before any allocation.

    Returns:
        Output name -> array with the declared shape and the datatype's little-endian dtype.

    Raises:
        TensorFormatError: a datatype, shape, size, name or contents layout is invalid.
    """
    return _decode(response.outputs, response.raw_output_contents, "output", max_elements)


def add_input(
    request: inference_pb2.ModelInferRequest, name: str, array: np.ndarray, compression: str | None = None
) -> None:
    """Append one input tensor (name, datatype, shape) and its raw bytes to a request.

    Args:
        request: The request to extend; it must hold raw contents only (none typed).
        name: The input name, unique within the request.
        array: Any supported array; non-contiguous or big-endian arrays are converted first.
        compression: ``zstd`` or ``lz4`` to compress the raw bytes (said in the tensor parameter
            ``edgesplit.compression``; :func:`request_inputs` undoes it), None to send them as they are.

    Raises:
        TensorFormatError: unsupported dtype, duplicate name, or the request already holds typed inputs.
    """
    _encode(request.inputs, request.raw_input_contents, "input", name, array, compression)


def add_output(response: inference_pb2.ModelInferResponse, name: str, array: np.ndarray) -> None:
    """Append one output tensor (name, datatype, shape) and its raw bytes to a response.

    Args:
        response: The response to extend; it must hold raw contents only (none typed).
        name: The output name, unique within the response.
        array: Any supported array; non-contiguous or big-endian arrays are converted first.

    Raises:
        TensorFormatError: unsupported dtype, duplicate name, or the response already holds typed outputs.
    """
    _encode(response.outputs, response.raw_output_contents, "output", name, array)


def get_param(
    params: Mapping[str, inference_pb2.InferParameter], key: str, default: object = None
) -> bool | int | float | str | object:
    """Return the Python value of a parameter, whichever kind it holds.

    Args:
        params: A ``parameters`` map of a request, response or tensor.
        key: The parameter name.
        default: Returned when the key is absent or holds no value.

    Returns:
        The ``bool``, ``int`` (int64 or uint64), ``float`` or ``str`` value, or ``default``.
    """
    if key not in params:  # never index first: indexing a protobuf map inserts the key
        return default
    param = params[key]
    kind = param.WhichOneof("parameter_choice")
    return default if kind is None else getattr(param, kind)


def set_param(
    params: MutableMapping[str, inference_pb2.InferParameter], key: str, value: bool | int | float | str
) -> None:
    """Set a parameter, choosing the oneof field from the value's type.

    ``bool`` -> ``bool_param``, ``int`` -> ``int64_param`` (``uint64_param`` above 2**63-1),
    ``float`` -> ``double_param``, ``str`` -> ``string_param``. numpy scalars count as their Python type.

    Args:
        params: A protobuf ``parameters`` map of a request, response or tensor.
        key: The parameter name.
        value: The value.

    Raises:
        TypeError: the value is not a bool, int, float or str.
        ValueError: an int outside [-2**63, 2**64-1].
    """
    kind, plain = _param_kind(key, value)
    setattr(params[key], kind, plain)  # setting one oneof member clears the others


def _param_kind(key: str, value: object) -> tuple[str, bool | int | float | str]:
    plain = value.item() if isinstance(value, np.generic) else value
    if isinstance(plain, bool):  # before int: bool is an int subclass
        return "bool_param", plain
    if isinstance(plain, int):
        if not _INT64_MIN <= plain <= _UINT64_MAX:
            raise ValueError(f"parameter {key!r}: {plain} is outside the int64/uint64 range [-2**63, 2**64-1]")
        return ("int64_param" if plain <= _INT64_MAX else "uint64_param"), plain
    if isinstance(plain, float):
        return "double_param", plain
    if isinstance(plain, str):
        return "string_param", plain
    raise TypeError(f"parameter {key!r}: {type(value).__name__} is not one of bool, int, float, str")


def _decode(tensors: Sequence[Any], raw: Sequence[bytes], kind: str, max_elements: int) -> dict[str, np.ndarray]:
    if raw and len(raw) != len(tensors):
        raise TensorFormatError(
            f"raw_{kind}_contents has {len(raw)} entries but there are {len(tensors)} {kind}s; "
            f"send exactly one raw entry per {kind}, in {kind} order"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        label = f"{kind} {tensor.name!r}"
        if tensor.name in arrays:
            raise TensorFormatError(f"{label} appears more than once; {kind} names must be unique")
        if tensor.datatype == BYTES:
            arrays[tensor.name] = _bytes_tensor(label, tensor, raw[index] if raw else None, max_elements)
            continue
        dtype, shape, count = _spec(label, tensor.datatype, tensor.shape, max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise TensorFormatError(
                    f"{label} sets contents while raw_{kind}_contents is used; send one or the other"
                )
            data = raw[index]
            if _COMPRESSION in tensor.parameters:
                data = _decompress(label, tensor, data, count * dtype.itemsize)
            arrays[tensor.name] = _from_raw(label, data, dtype, shape, count)
        else:
            arrays[tensor.name] = _from_contents(label, tensor, shape, count)
    return arrays


def _bytes_tensor(label: str, tensor: Any, data: bytes | None, max_elements: int) -> np.ndarray:
    """A ``BYTES`` tensor as an object array (:mod:`protos.byte_tensors`); not compressed, elements counted."""
    _, shape, count = _spec(label, "UINT8", tensor.shape, max_elements)
    if _COMPRESSION in tensor.parameters:
        raise TensorFormatError(f"{label}: BYTES tensors are not compressed (their elements already are)")
    if data is None:
        items = tensor.contents.bytes_contents
        if len(items) != count:
            raise TensorFormatError(
                f"{label} has {len(items)} values in contents.bytes_contents; shape {list(shape)} needs exactly {count}"
            )
        return from_items(list(items), shape)
    try:
        return unpack(label, data, shape, count)
    except ValueError as exc:
        raise TensorFormatError(str(exc)) from None


def _spec(label: str, datatype: str, dims: Sequence[int], max_elements: int) -> tuple[np.dtype, tuple[int, ...], int]:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise TensorFormatError(f"{label} has datatype {datatype!r}; supported: {_VALID_NAMES}")
    shape = tuple(int(dim) for dim in dims)
    if any(dim < 0 for dim in shape):
        raise TensorFormatError(f"{label} has shape {list(shape)}; every dimension must be >= 0")
    count = math.prod(shape)  # Python ints: no overflow, nothing allocated yet
    if count > max_elements:
        raise TensorFormatError(
            f"{label} declares shape {list(shape)} = {count} elements; at most {max_elements} are accepted"
        )
    return dtype, shape, count


def _from_raw(label: str, data: bytes, dtype: np.dtype, shape: tuple[int, ...], count: int) -> np.ndarray:
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise TensorFormatError(
            f"{label} has {len(data)} raw bytes; shape {list(shape)} of {datatype_of(dtype)} "
            f"needs exactly {expected} ({count} x {dtype.itemsize})"
        )
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def _from_contents(label: str, tensor: Any, shape: tuple[int, ...], count: int) -> np.ndarray:
    datatype = tensor.datatype
    if datatype not in _TYPED_FIELDS:
        raise TensorFormatError(f"{label} is {datatype}, which has no typed contents field; send it in raw contents")
    field, wire_dtype = _TYPED_FIELDS[datatype]
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise TensorFormatError(
            f"{label} has {len(values)} values in contents.{field}; shape {list(shape)} needs exactly {count}"
        )
    wide = np.array(values, dtype=wire_dtype)
    target = DATATYPES[datatype]
    if target.itemsize < wire_dtype.itemsize and wide.size:
        info = np.iinfo(target)
        if wide.min() < info.min or wide.max() > info.max:
            raise TensorFormatError(
                f"{label} has contents.{field} values outside the {datatype} range [{info.min}, {info.max}]"
            )
    return wide.astype(target, copy=False).reshape(shape)


def _decompress(label: str, tensor: Any, data: bytes, expected: int) -> bytes:
    from protos.compression import decompress  # imports TensorFormatError from here

    name = get_param(tensor.parameters, _COMPRESSION)
    if not isinstance(name, str):
        raise TensorFormatError(f"{label}: parameter {_COMPRESSION!r} must be a string (zstd or lz4)")
    try:
        return decompress(name, data, expected)
    except TensorFormatError as exc:
        raise TensorFormatError(f"{label}: {exc}") from None


def _encode(tensors: Any, raw: Any, kind: str, name: str, array: np.ndarray, compression: str | None = None) -> None:
    if len(raw) != len(tensors):
        raise TensorFormatError(
            f"cannot add raw {kind} {name!r}: the message already holds {len(tensors)} {kind}s but "
            f"{len(raw)} raw entries (typed contents?); build a message with raw contents only"
        )
    if any(tensor.name == name for tensor in tensors):
        raise TensorFormatError(f"{kind} {name!r} is already present; {kind} names must be unique")
    source = np.asarray(array)
    if source.dtype == object:  # encoded images and other variable-length elements
        try:
            raw.append(pack(source))
        except TypeError as exc:
            raise TensorFormatError(f"{kind} {name!r}: {exc}") from None
        tensors.add(name=name, datatype=BYTES, shape=source.shape)
        return
    datatype = datatype_of(source.dtype)
    contiguous = np.ascontiguousarray(source, dtype=DATATYPES[datatype])
    tensor = tensors.add(name=name, datatype=datatype, shape=source.shape)
    if compression is None:
        raw.append(contiguous.tobytes())
        return
    from protos.compression import compress

    raw.append(compress(compression, contiguous.data.cast("B")))
    set_param(tensor.parameters, _COMPRESSION, compression)
