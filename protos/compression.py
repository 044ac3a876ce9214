"""Lossless compression of raw tensor bytes on the wire: ``zstd`` and ``lz4`` (frame format).

A compressed input says so in its tensor parameter ``edgesplit.compression`` (:data:`protos.params.COMPRESSION`);
:mod:`protos.tensors` compresses in ``add_input`` and decompresses in ``request_inputs``. Decompression is safe
against decompression bombs: the receiver knows how many bytes the declared shape and datatype need, and never
produces (or allocates) more than that plus one byte, whatever a frame header claims.

``zstandard`` and ``lz4`` are optional: each is imported when first used, and a missing one raises an
:class:`ImportError` that names the package to install.

Example:
    >>> data = compress("zstd", bytes(4096))                          # doctest: +SKIP
    >>> len(data) < 4096, decompress("zstd", data, 4096) == bytes(4096) # doctest: +SKIP
    (True, True)
"""

from __future__ import annotations

from types import ModuleType

from protos.tensors import TensorFormatError

__all__ = ["COMPRESSORS", "compress", "decompress"]

COMPRESSORS = ("zstd", "lz4")
"""The lossless compressors a tensor may travel with."""

_PACKAGES = {"zstd": ("zstandard", "zstandard"), "lz4": ("lz4.frame", "lz4")}  # name -> (module, pip package)
_ZSTD_LEVEL = 3


def _module(name: str) -> ModuleType:
    if name not in _PACKAGES:
        raise TensorFormatError(f"unknown compressor {name!r}; valid compressors: {list(COMPRESSORS)}")
    module, package = _PACKAGES[name]
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ImportError(f"compressor {name!r} needs the {package!r} package: pip install {package}") from exc


def compress(name: str, data: bytes | memoryview) -> bytes:
    """Compress ``data`` with the compressor ``name`` into one self-delimiting frame.

    Args:
        name: One of :data:`COMPRESSORS`.
        data: The raw bytes (any C-contiguous buffer).

    Returns:
        The compressed frame (zstd with its content size in the header; an LZ4 frame with its content size).

    Raises:
        TensorFormatError: ``name`` is not a known compressor (the message lists the valid ones).
        ImportError: the compressor's package is not installed.
    """
    module = _module(name)
    if name == "zstd":
        return bytes(module.ZstdCompressor(level=_ZSTD_LEVEL).compress(data))
    return bytes(module.compress(data, store_size=True))


def decompress(name: str, data: bytes, expected_size: int) -> bytes:
    """Decompress one frame that must hold exactly ``expected_size`` bytes; never allocates much more.

    Args:
        name: One of :data:`COMPRESSORS`.
        data: One compressed frame, nothing before or after it.
        expected_size: The exact decompressed size, known from the tensor's declared shape and datatype.

    Returns:
        The decompressed bytes, exactly ``expected_size`` of them.

    Raises:
        TensorFormatError: unknown compressor, a corrupt or truncated frame, trailing data, or a decompressed
            size other than ``expected_size``.
        ImportError: the compressor's package is not installed.
    """
    module = _module(name)
    try:
        out = _zstd(module, data, expected_size) if name == "zstd" else _lz4(module, data, expected_size)
    except (RuntimeError, ValueError, getattr(module, "ZstdError", RuntimeError)) as exc:  # lz4 raises RuntimeError
        if isinstance(exc, TensorFormatError):
            raise
        raise TensorFormatError(f"{name}: not a valid {name} frame ({exc})") from None
    if len(out) != expected_size:
        raise TensorFormatError(
            f"{name}: the frame decompresses to {'more than ' if len(out) > expected_size else ''}{len(out)} bytes;"
            f" the declared shape and datatype need exactly {expected_size}"
        )
    return out


def _zstd(zstandard: ModuleType, data: bytes, expected_size: int) -> bytes:
    declared = zstandard.frame_content_size(data)  # raises ZstdError for garbage; -1 when the header omits it
    if declared not in (-1, expected_size):
        raise TensorFormatError(
            f"zstd: the frame header declares {declared} bytes; the declared shape and datatype need exactly"
            f" {expected_size}"
        )
    # A bounded read: at most expected_size + 1 bytes are ever produced, whatever the frames claim; reading
    # across frames makes trailing bytes an error instead of being ignored.
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        return bytes(reader.read(expected_size + 1))


def _lz4(frame: ModuleType, data: bytes, expected_size: int) -> bytes:
    decompressor = frame.LZ4FrameDecompressor()
    out = bytes(decompressor.decompress(data, max_length=expected_size + 1))
    if len(out) <= expected_size and not decompressor.eof:
        raise TensorFormatError("lz4: the frame is truncated (no end mark)")
    if decompressor.unused_data:
        raise TensorFormatError(f"lz4: {len(decompressor.unused_data)} bytes follow the end of the frame")
    return out
