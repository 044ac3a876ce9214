"""Pure logic of the security settings: token files and tokens, model names, TLS file checks on both sides, and
the gRPC target for one or several cloud replicas. Error messages name the bad value, never a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud.cli import TOKENS_ENV, auth_tokens
from cloud.errors import InvalidArgument
from cloud.names import validate_model_name, validate_version
from cloud.security import check_tls_files
from cloud.server import CloudConfig
from edge.channel import ClientTLS, CloudTarget
from protos.credentials import bearer_metadata, check_token, parse_tokens, read_pem, read_tokens

GOOD = "a-good-token-0123456789"
OTHER = "another-token-0123456789"

# --- tokens ------------------------------------------------------------------------------------------------------


def test_token_file_skips_comments_and_blank_lines_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# current\n{GOOD}\n\n  # next, for the rotation\n  {OTHER}  \n{GOOD}\n")
    assert read_tokens(path) == (GOOD, OTHER)


@pytest.mark.parametrize(
    ("text", "words", "secret"),
    [
        ("# nothing but comments\n\n", ["no token"], None),
        ("short-secret\n", ["line 1", "at least 16 characters", "has 12"], "short-secret"),
        (f"# c\n{GOOD} {OTHER}\n", ["line 2", "printable ASCII characters without spaces"], GOOD),
        ("tökén-0123456789abcdef\n", ["printable ASCII"], "tökén"),
    ],
    ids=["empty", "short", "space", "non-ascii"],
)
def test_bad_token_files_are_refused_without_quoting_the_token(text: str, words: list[str], secret: str | None) -> None:
    with pytest.raises(ValueError) as info:
        parse_tokens(text, "tokens.txt")
    message = str(info.value)
    assert message.startswith("tokens.txt") and all(w in message for w in words), message
    assert secret is None or secret not in message, message


def test_unreadable_token_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read token file '.*missing'"):
        read_tokens(tmp_path / "missing")


def test_bearer_metadata() -> None:
    assert bearer_metadata(GOOD) == (("authorization", f"Bearer {GOOD}"),)
    with pytest.raises(ValueError, match="at least 16"):
        bearer_metadata("tiny")


def test_cloud_tokens_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{GOOD}\n")
    assert auth_tokens(str(path), {TOKENS_ENV: f" {OTHER} ,,{GOOD}"}) == (GOOD, OTHER)
    assert auth_tokens(None, {TOKENS_ENV: OTHER}) == (OTHER,)
    assert auth_tokens(None, {}) == ()
    with pytest.raises(ValueError, match=rf"\${TOKENS_ENV}, entry 2: a token needs at least 16"):
        auth_tokens(None, {TOKENS_ENV: f"{GOOD},short"})


def test_cloud_config_checks_tokens_and_hides_them(tmp_path: Path) -> None:
    config = CloudConfig(bundles=("b",), auth_tokens=(GOOD, OTHER))
    assert GOOD not in repr(config) and OTHER not in repr(config)
    with pytest.raises(ValueError, match=r"auth_tokens\[1\]: a token needs at least 16"):
        CloudConfig(bundles=("b",), auth_tokens=(GOOD, "short"))
    with pytest.raises(ValueError, match="auth_tokens must be a tuple of tokens, got a str"):
        CloudConfig(bundles=("b",), auth_tokens=GOOD)  # type: ignore[arg-type]
    assert check_token(GOOD) == GOOD


# --- model names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mobilenet_v2-0.25", "A", "1.0", "x" * 128])
def test_valid_model_names(name: str) -> None:
    assert validate_model_name(name) == name
    assert validate_version(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "a\\b", ".x", "-x", "a..b", "x" * 129, "a\n", "a b", "é"])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="is not valid: a model name has 1 to 128 characters"):
        validate_model_name(name)


def test_long_names_are_cut_in_the_message_and_empty_version_is_the_default() -> None:
    with pytest.raises(InvalidArgument, match=r"\.\.\. \(300 characters\)") as info:
        validate_model_name("/" * 300)
    assert len(str(info.value)) < 250
    assert validate_version("") == ""
    with pytest.raises(InvalidArgument, match=r"model version '\.\./1' is not valid"):
        validate_version("../1")


# --- TLS files ---------------------------------------------------------------------------------------------------


def test_cloud_tls_files_are_checked(pki: Any, tmp_path: Path) -> None:
    check_tls_files(pki.server_cert, pki.server_key, pki.ca)
    check_tls_files(None, None, None)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases: list[tuple[tuple[str | None, str | None, str | None], str]] = [
        ((pki.server_cert, None, None), "--tls-cert needs --tls-key"),
        ((None, pki.server_key, None), "--tls-key needs --tls-cert"),
        ((None, None, pki.ca), "--tls-client-ca .* needs --tls-cert and --tls-key"),
        ((str(tmp_path / "gone.pem"), pki.server_key, None), r"--tls-cert '.*gone\.pem': cannot read it"),
        ((pki.server_cert, str(not_pem), None), r"--tls-key '.*not\.pem': not a PEM file"),
        ((pki.server_cert, pki.client_key, None), "KEY_VALUES_MISMATCH"),
        ((pki.server_cert, pki.server_key, str(not_pem)), r"--tls-client-ca '.*not\.pem': not a PEM file"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            check_tls_files(*args)
    with pytest.raises(ValueError, match="--tls-cert needs --tls-key"):
        CloudConfig(bundles=("b",), tls_cert=pki.server_cert)


def test_edge_tls_files_are_checked(pki: Any, tmp_path: Path) -> None:
    ClientTLS(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    ClientTLS()  # the system's roots
    with pytest.raises(ValueError, match="--cloud-cert and --cloud-key go together"):
        ClientTLS(ca=pki.ca, cert=pki.client_cert)
    with pytest.raises(ValueError, match=r"--cloud-ca '.*gone\.pem': cannot read it"):
        ClientTLS(ca=str(tmp_path / "gone.pem"))
    assert read_pem("--x", pki.ca).startswith(b"-----BEGIN CERTIFICATE")


# --- targets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "target", "hosts"),
    [
        ("127.0.0.1:8001", "127.0.0.1:8001", ()),
        ("cloud.internal:8001", "cloud.internal:8001", ()),
        ("dns:///cloud.internal:8001", "dns:///cloud.internal:8001", ()),
        ("127.0.0.1:8001, 127.0.0.1:8002", "ipv4:127.0.0.1:8001,127.0.0.1:8002", ("127.0.0.1", "127.0.0.1")),
        (
            "10.0.0.1:1,10.0.0.2:2,10.0.0.3:3",
            "ipv4:10.0.0.1:1,10.0.0.2:2,10.0.0.3:3",
            ("10.0.0.1", "10.0.0.2", "10.0.0.3"),
        ),
        ("[::1]:8001,[fd00::2]:8002", "ipv6:[::1]:8001,[fd00::2]:8002", ("::1", "fd00::2")),
    ],
)
def test_cloud_targets(spec: str, target: str, hosts: tuple[str, ...]) -> None:
    parsed = CloudTarget.parse(spec)
    assert (parsed.target, parsed.hosts, parsed.balanced) == (target, hosts, len(hosts) > 1)
    lb = ("grpc.lb_policy_name", "round_robin")
    assert (lb in parsed.options(None)) == parsed.balanced


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("127.0.0.1:8001,", "an empty entry"),
        ("cloud-a:8001,cloud-b:8001", "'cloud-a:8001': several replicas are given as IP:PORT"),
        ("127.0.0.1,127.0.0.1:8002", "'127.0.0.1': several replicas"),
        ("127.0.0.1:99999,127.0.0.1:8002", "'127.0.0.1:99999'"),
        ("127.0.0.1:8001,[::1]:8002", "mixes IPv4 and IPv6"),
    ],
)
def test_bad_cloud_targets(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CloudTarget.parse(spec)


def test_tls_names_for_replicas(pki: Any) -> None:
    tls = ClientTLS(ca=pki.ca)
    same = CloudTarget.parse("127.0.0.1:1,127.0.0.1:2")
    assert ("grpc.default_authority", "127.0.0.1") in same.options(tls)
    different = CloudTarget.parse("10.0.0.1:1,10.0.0.2:1")
    with pytest.raises(ValueError, match="needs --cloud-server-name"):
        different.options(tls)
    named = ClientTLS(ca=pki.ca, server_name="cloud.internal")
    assert ("grpc.default_authority", "cloud.internal") in different.options(named)
    assert ("grpc.default_authority", "cloud.internal") in CloudTarget.parse("10.0.0.1:1").options(named)
    assert not [o for o in CloudTarget.parse("10.0.0.1:1").options(tls) if o[0] == "grpc.default_authority"]
