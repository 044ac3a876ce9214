"""Toxics: what a proxy does to the bytes passing one way through it, with Toxiproxy's names, units and JSON.

A toxic has a ``name`` (unique within its proxy; default ``TYPE_STREAM``), a ``type``, a ``stream``
(``upstream`` = client → server, ``downstream`` = server → client), a ``toxicity`` (the probability, drawn per
connection, that it applies at all) and numeric ``attributes``:

============  ======================================================================================
type          attributes
============  ======================================================================================
latency       ``latency`` ms, ``jitter`` ms: each chunk leaves ``latency ± jitter`` after it arrived
bandwidth     ``rate`` KB/s (kilobytes, 1000 bytes): paced, large chunks split; 0 = unlimited
timeout       ``timeout`` ms: data is dropped; the connection closes after ``timeout`` (0 = never)
reset_peer    ``timeout`` ms: the first data starts a timer; then the connection is reset (TCP RST)
limit_data    ``bytes``: the connection closes once that many bytes have passed
slicer        ``average_size`` bytes, ``size_variation`` bytes, ``delay`` µs: chunks cut into slices
============  ======================================================================================

Toxics are immutable values; :meth:`Toxic.updated` returns a changed copy, as an API update does.

Example:
    >>> toxic = Toxic("latency", "downstream", {"latency": 50})
    >>> toxic.name, dict(toxic.attributes)
    ('latency_downstream', {'latency': 50, 'jitter': 0})
    >>> toxic.updated({"attributes": {"jitter": 5}}).to_json()["attributes"]
    {'latency': 50, 'jitter': 5}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from netsim.errors import BadRequestError

__all__ = ["STREAMS", "TOXIC_TYPES", "Toxic"]

STREAMS = ("upstream", "downstream")
"""``upstream``: client → server (what the client sends); ``downstream``: server → client."""

TOXIC_TYPES: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "latency": MappingProxyType({"latency": 0, "jitter": 0}),
        "bandwidth": MappingProxyType({"rate": 0}),
        "timeout": MappingProxyType({"timeout": 0}),
        "reset_peer": MappingProxyType({"timeout": 0}),
        "limit_data": MappingProxyType({"bytes": 0}),
        "slicer": MappingProxyType({"average_size": 0, "size_variation": 0, "delay": 0}),
    }
)
"""Toxic type -> its attributes and their defaults (Toxiproxy's: all zero)."""

_INTEGER_ATTRIBUTES = frozenset({"bytes", "average_size", "size_variation"})
_JSON_FIELDS = ("name", "type", "stream", "toxicity", "attributes")


@dataclass(frozen=True)
class Toxic:
    """One toxic; validated on construction (a bad value raises :class:`BadRequestError`, a ``ValueError``)."""

    type: str
    stream: str = "downstream"
    attributes: Mapping[str, float] = field(default_factory=dict)
    name: str = ""
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if self.type not in TOXIC_TYPES:
            raise BadRequestError(f"unknown toxic type {self.type!r}; valid types: {', '.join(TOXIC_TYPES)}")
        if self.stream not in STREAMS:
            raise BadRequestError(f"toxic stream {self.stream!r} is invalid; valid streams: {', '.join(STREAMS)}")
        if not isinstance(self.name, str):
            raise BadRequestError(f"toxic name must be a string, got {self.name!r}")
        if not _is_number(self.toxicity) or not 0.0 <= self.toxicity <= 1.0:
            raise BadRequestError(f"toxicity {self.toxicity!r} is invalid; it is a probability from 0 to 1")
        object.__setattr__(self, "name", self.name or f"{self.type}_{self.stream}")
        object.__setattr__(self, "attributes", MappingProxyType(_attributes(self.type, self.attributes)))

    @classmethod
    def from_json(cls, data: Any) -> Toxic:
        """A toxic from an API body ``{"name", "type", "stream", "toxicity", "attributes"}`` (Toxiproxy's)."""
        data = _json_object(data, "toxic")
        _check_fields(data, "toxic")
        if "type" not in data:
            raise BadRequestError(f"toxic has no 'type'; valid types: {', '.join(TOXIC_TYPES)}")
        return cls(
            type=data["type"],
            stream=data.get("stream", "downstream"),
            attributes=_json_object(data.get("attributes", {}), "toxic attributes"),
            name=data.get("name") or "",
            toxicity=data.get("toxicity", 1.0),
        )

    def updated(self, changes: Any) -> Toxic:
        """A copy with new ``attributes`` (merged) and/or ``toxicity``; name, type and stream cannot change."""
        changes = _json_object(changes, "toxic update")
        _check_fields(changes, "toxic update")
        for key in ("name", "type", "stream"):
            if key in changes and changes[key] != getattr(self, key):
                raise BadRequestError(
                    f"cannot change toxic {self.name!r}'s {key} from {getattr(self, key)!r} to {changes[key]!r}; "
                    "delete it and add a new one"
                )
        attributes = {**self.attributes, **_json_object(changes.get("attributes", {}), "toxic attributes")}
        toxicity = changes.get("toxicity", self.toxicity)
        return Toxic(self.type, self.stream, attributes, self.name, toxicity)

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON form of this toxic."""
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _attributes(type_: str, given: Mapping[str, Any]) -> dict[str, float]:
    valid = TOXIC_TYPES[type_]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise BadRequestError(
            f"unknown attribute(s) {', '.join(unknown)} for a {type_} toxic; valid attributes: {', '.join(valid)}"
        )
    merged: dict[str, float] = {**valid, **given}
    for key, value in merged.items():
        if not _is_number(value) or value < 0:
            raise BadRequestError(f"{type_} attribute {key}={value!r} is invalid; it must be a number >= 0")
        if key in _INTEGER_ATTRIBUTES and value != int(value):
            raise BadRequestError(f"{type_} attribute {key}={value!r} is invalid; it must be a whole number of bytes")
    if type_ == "slicer" and not merged["size_variation"] < merged["average_size"]:
        raise BadRequestError(
            f"slicer needs 0 <= size_variation < average_size, got average_size={merged['average_size']} "
            f"and size_variation={merged['size_variation']}"
        )
    return merged


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _check_fields(data: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(data) - set(_JSON_FIELDS))
    if unknown:
        valid = ", ".join(_JSON_FIELDS)
        raise BadRequestError(f"unknown field(s) {', '.join(unknown)} in {what}; valid fields: {valid}")
