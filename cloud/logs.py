"""Structured logs: one JSON object per line (``--log-format json``), or readable text with ``key=value`` fields.

Log with the fields in ``extra={"fields": {...}}``; both formats print them.

Example:
    >>> configure("json", "INFO")                                                      # doctest: +SKIP
    >>> log.info("rpc failed", extra={"fields": {"code": "INVALID_ARGUMENT"}})         # doctest: +SKIP
    {"ts": "2026-11-30T05:01:02.345Z", "level": "INFO", "logger": "edgesplit.cloud", "msg": "rpc failed", ...}
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "configure"]

FORMATS = ("text", "json")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", **fields}`` (and ``exc`` with a traceback) per line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        entry: dict[str, object] = {
            "ts": ts,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        return text + "".join(f" {k}={v}" for k, v in fields.items()) if fields else text


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Send the root logger's records to stderr in ``fmt`` (``text`` or ``json``) from ``level`` up."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; valid: {list(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
