"""Model names and versions the cloud accepts: a strict pattern, checked before anything looks a name up.

Names and versions arrive in requests and may one day name a directory (a model repository on disk), so only a
plain file-name-like word passes: no separators, no ``..``, no leading dot, nothing longer than 128 characters.
A bad one is ``INVALID_ARGUMENT`` with the rule in the message.

Example:
    >>> validate_model_name("digits")
    'digits'
    >>> validate_model_name("../etc")   # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    cloud.errors.InvalidArgument: model name '../etc' is not valid: ...
"""

from __future__ import annotations

import re

from cloud.errors import InvalidArgument

__all__ = ["MODEL_NAME", "validate_model_name", "validate_version"]

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A model name or version: 1 to 128 characters of ``A-Z a-z 0-9 _ . -``, the first a letter or digit."""

_RULE = "1 to 128 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit, with no '..'"


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut to 64 characters (requests may send anything)."""
    return repr(value) if len(value) <= 64 else f"{value[:64]!r}... ({len(value)} characters)"


def _valid_name(value: str) -> bool:
    return MODEL_NAME.fullmatch(value) is not None and ".." not in value


def validate_model_name(name: str) -> str:
    """``name`` when it is a valid model name; :class:`~cloud.errors.InvalidArgument` naming the rule otherwise.

    Args:
        name: The model name from a request.

    Returns:
        ``name``, unchanged.

    Raises:
        InvalidArgument: it does not match :data:`MODEL_NAME` or contains ``..`` (no paths, no traversal).
    """
    if not _valid_name(name):
        raise InvalidArgument(f"model name {_shown(name)} is not valid: a model name has {_RULE}")
    return name


def validate_version(version: str) -> str:
    """``version`` when it is empty (the default version) or follows the model-name rule; InvalidArgument otherwise.

    Args:
        version: The model version from a request.

    Returns:
        ``version``, unchanged.

    Raises:
        InvalidArgument: it is not empty and does not follow :func:`validate_model_name`'s rule.
    """
    if version and not _valid_name(version):
        raise InvalidArgument(f"model version {_shown(version)} is not valid: a version is empty or has {_RULE}")
    return version
