"""docker/apt_mirror.py: the debootstrap mirror comes from the host's apt sources, one-line and deb822 alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "docker" / "apt_mirror.py"
_SPEC = importlib.util.spec_from_file_location("apt_mirror", _PATH)
assert _SPEC and _SPEC.loader
apt_mirror = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("apt_mirror", apt_mirror)  # dataclasses look their module up there
_SPEC.loader.exec_module(apt_mirror)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_skips_security_and_disabled_stanzas(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://nope.example/debian bookworm main\n")
    assert apt_mirror.find_mirror(apt_mirror.read_sources(tmp_path)) == "http://mirror.example/debian"


def test_one_line_sources_with_options_and_comments(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian bookworm main # the mirror\n"
    )
    assert apt_mirror.find_mirror(apt_mirror.read_sources(tmp_path)) == "https://mirror.example/debian"


def test_no_usable_source_says_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://security.debian.org/debian-security bookworm-security main\n")
    with pytest.raises(LookupError, match="bookworm-security"):
        apt_mirror.find_mirror(apt_mirror.read_sources(tmp_path))
