"""Credentials as edge and cloud both handle them: bearer tokens on the wire, token files, PEM files.

A client authenticates every call with the metadata ``authorization: Bearer <token>``; the cloud checks it
(:mod:`cloud.auth`) and the edge sends it (:mod:`edge.client`). A token file holds one token per line; blank lines
and lines starting with ``#`` are ignored, so a file can list the old and the new token while they are rotated.
TLS certificates and keys are PEM files, read by :func:`read_pem` with errors that name the option and the path.

Example:
    >>> parse_tokens("# rotated 2024-05\\nfirst-token-0123456789\\n\\nsecond-token-0123456789\\n", "tokens.txt")
    ('first-token-0123456789', 'second-token-0123456789')
    >>> bearer_metadata("first-token-0123456789")
    (('authorization', 'Bearer first-token-0123456789'),)
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AUTHORIZATION",
    "MIN_TOKEN_LENGTH",
    "SCHEME",
    "bearer_metadata",
    "check_token",
    "parse_tokens",
    "read_pem",
    "read_tokens",
]

AUTHORIZATION = "authorization"
"""The metadata key (gRPC metadata keys are lower case)."""

SCHEME = "Bearer"
"""The scheme before the token in the metadata value (matched case-insensitively, as in HTTP)."""

MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused: they could be guessed."""


def check_token(token: str, where: str = "token") -> str:
    """``token`` if it can travel as gRPC metadata and is long enough; ValueError otherwise.

    Args:
        token: The secret.
        where: Where it came from (a file and line, a variable), for the error message; never the secret itself.

    Returns:
        The token, unchanged.

    Raises:
        ValueError: shorter than :data:`MIN_TOKEN_LENGTH`, or not printable ASCII without spaces.
    """
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters, this one has {len(token)}")
    if not all("!" <= c <= "~" for c in token):
        raise ValueError(f"{where}: a token may hold only printable ASCII characters without spaces")
    return token


def parse_tokens(text: str, source: str) -> tuple[str, ...]:
    """The tokens in a token file's text: one a line, blank lines and ``#`` comments skipped, each checked.

    Args:
        text: The file's content.
        source: Its name, for error messages.

    Returns:
        The tokens in file order, duplicates dropped.

    Raises:
        ValueError: a token fails :func:`check_token` (the message names the file and line), or there is none.
    """
    tokens: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            tokens[check_token(stripped, f"{source}, line {number}")] = None
    if not tokens:
        raise ValueError(f"{source}: no token in the file (one a line; blank lines and '#' comments are skipped)")
    return tuple(tokens)


def read_tokens(path: str | Path) -> tuple[str, ...]:
    """The tokens in the token file at ``path`` (see :func:`parse_tokens`).

    Raises:
        ValueError: the file cannot be read (the message names the path) or holds no valid token.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot read token file {str(path)!r}: {reason}") from None
    return parse_tokens(text, str(path))


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token``: build it once, pass it on every call."""
    return ((AUTHORIZATION, f"{SCHEME} {check_token(token)}"),)


def read_pem(flag: str, path: str | Path) -> bytes:
    """The bytes of the PEM file at ``path``, given with option ``flag`` (named in errors, with the path).

    Raises:
        ValueError: the file cannot be read, or holds no ``-----BEGIN`` line.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag} {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{flag} {str(path)!r}: not a PEM file (no '-----BEGIN' line)")
    return data
