"""KServe v2 ``BYTES`` tensors: variable-length elements (an encoded image each), as numpy object arrays.

In raw contents each element is a 4-byte little-endian length followed by that many bytes, the layout of the
KServe v2 / Triton binary tensor format; typed contents use ``bytes_contents``. Elements are decoded as
zero-copy ``memoryview`` slices of the message's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

__all__ = ["BYTES", "from_items", "pack", "unpack"]

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


def unpack(label: str, data: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    """Raw ``BYTES`` contents -> an object array of ``memoryview`` elements; ``ValueError`` naming the fault."""
    view = memoryview(data)
    items: list[memoryview] = []
    offset = 0
    for index in range(count):
        if offset + _LENGTH.size > len(view):
            raise ValueError(f"{label}: raw BYTES end inside element {index}'s 4-byte length ({count} declared)")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise ValueError(f"{label}: element {index} declares {length} bytes but {len(view) - offset} remain")
        items.append(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise ValueError(f"{label}: {len(view) - offset} bytes left after the {count} declared BYTES elements")
    return from_items(items, shape)


def from_items(items: Sequence[bytes | memoryview], shape: tuple[int, ...]) -> np.ndarray:
    """An object array of ``shape`` holding ``items`` in order."""
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out.reshape(shape)


def pack(array: np.ndarray) -> bytes:
    """An object array of bytes-like elements -> raw ``BYTES`` contents."""
    parts: list[bytes] = []
    for item in array.ravel():
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"a BYTES tensor holds bytes, got an element of type {type(item).__name__}")
        parts += [_LENGTH.pack(len(item)), bytes(item)]
    return b"".join(parts)
