"""Print the Debian mirror this host's apt uses, for ``debootstrap`` (``docker/bootstrap.sh`` calls it).

Reads ``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/*.list`` (one-line ``deb URI SUITE COMPONENTS``) and
``*.sources`` (deb822: ``Types``/``URIs``/``Suites``/``Components`` stanzas, ``Enabled: no`` skipped), and picks the
first ``deb`` entry that carries Debian's ``main`` for a release suite (not ``-security``, ``-updates`` or
``-backports``: those live in other archives or hold only updates). Nothing is hard-coded: a host without such an
entry gets an error that says so. Standard library only; runs with the host's ``python3``.

Example::

    python3 docker/apt_mirror.py            # -> http://deb.debian.org/debian
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Source", "find_mirror", "parse_deb822", "parse_one_line", "read_sources"]

_NOT_A_RELEASE = ("-security", "-updates", "-backports", "-proposed-updates")


@dataclass(frozen=True)
class Source:
    """One apt source entry: ``deb`` or ``deb-src``, a URI, a suite, its components."""

    type: str
    uri: str
    suite: str
    components: tuple[str, ...]


def parse_one_line(text: str) -> Iterator[Source]:
    """Entries of a one-line-style file (``sources.list``); options in ``[...]`` are skipped."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) >= 3 and fields[0] in ("deb", "deb-src"):
            yield Source(fields[0], fields[1], fields[2], tuple(fields[3:]))


def parse_deb822(text: str) -> Iterator[Source]:
    """Entries of a deb822-style file (``*.sources``): one per type × URI × suite of each stanza."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:  # a continuation line
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for type_ in fields.get("types", "").split():
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    yield Source(type_, uri, suite, tuple(fields.get("components", "").split()))


def read_sources(root: Path = Path("/etc/apt")) -> list[Source]:
    """Every entry of ``root/sources.list`` and ``root/sources.list.d/*.{list,sources}``, in apt's order."""
    files = [root / "sources.list"]
    parts = root / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    sources: list[Source] = []
    for path in files:
        if path.is_file():
            parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
            sources.extend(parse(path.read_text(errors="replace")))
    return sources


def find_mirror(sources: Iterable[Source]) -> str:
    """The URI of the first ``deb`` entry with ``main`` for a release suite; ``LookupError`` if none."""
    seen = []
    for s in sources:
        seen.append(f"{s.type} {s.uri} {s.suite} {' '.join(s.components)}")
        release = s.type == "deb" and "main" in s.components and not s.suite.endswith(_NOT_A_RELEASE)
        if release and s.uri.startswith(("http://", "https://", "file:/")):
            return s.uri.rstrip("/")
    raise LookupError(
        "no apt source with Debian's 'main' for a release suite (deb URI SUITE main) in /etc/apt/sources.list"
        f" or /etc/apt/sources.list.d/; found: {seen or 'nothing'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print the Debian mirror of this host's apt sources")
    parser.add_argument("--root", type=Path, default=Path("/etc/apt"), help="apt's configuration directory")
    args = parser.parse_args(argv)
    try:
        print(find_mirror(read_sources(args.root)))
    except LookupError as exc:
        print(f"apt_mirror: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
