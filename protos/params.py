"""edgesplit's own request parameters: they travel in ``ModelInferRequest.parameters`` under ``edgesplit.``."""

from __future__ import annotations

__all__ = ["BOTTLENECK", "BUNDLE_HASH", "CODEC", "COMPRESSION", "RETRY_AFTER_MS", "SERVER_MS", "SPLIT_POINT"]

BUNDLE_HASH = "edgesplit.bundle_hash"
"""``string``: the content hash of the bundle the edge runs; the cloud refuses a mismatch (FAILED_PRECONDITION)."""

SPLIT_POINT = "edgesplit.split_point"
"""``int64``: the split point the tensor was taken at (the edge ran segments ``[0, split)``)."""

CODEC = "edgesplit.codec"
"""``string``: the wire codec of the split tensor (see :mod:`protos.codecs`); absent means ``fp32``."""

BOTTLENECK = "edgesplit.bottleneck"
"""``bool``: the tensor is the code of the split point's learned bottleneck (the cloud runs its bottleneck tail:
decoder + tail); absent means the plain split tensor."""

COMPRESSION = "edgesplit.compression"
"""``string``, a *tensor* parameter: the raw bytes of this input are compressed with ``zstd`` or ``lz4``."""

SERVER_MS = "edgesplit.server_ms"
"""``double``, a *response* parameter: the server's time for the request (decode, tail, encode), in ms."""

RETRY_AFTER_MS = "retry-after-ms"
"""*Trailing metadata* (not a parameter) of a ``RESOURCE_EXHAUSTED`` answer: when to try again, in ms."""
