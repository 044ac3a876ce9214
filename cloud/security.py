"""The cloud's transport security: TLS and mutual TLS credentials.

TLS files are checked when the configuration is made (:func:`check_tls_files`: readable, PEM, the key matches the
certificate), so a bad file stops ``edgesplit cloud`` at once with the path in the message, not at the first
handshake. :func:`server_credentials` builds the gRPC credentials from them when the server binds.

Example:
    >>> check_tls_files("server.pem", "server.key", "clients-ca.pem")   # doctest: +SKIP
    >>> credentials = server_credentials("server.pem", "server.key", "clients-ca.pem")   # doctest: +SKIP
"""

from __future__ import annotations

import ssl

import grpc

from protos.credentials import read_pem

__all__ = ["check_tls_files", "server_credentials"]


def _no_password() -> bytes:
    raise ValueError("the key is encrypted and gRPC cannot ask for a password")


def check_tls_files(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """Check the TLS settings before anything binds.

    Args:
        cert: The server's certificate chain (PEM), or None for a plaintext port.
        key: Its private key (PEM, unencrypted).
        client_ca: CA certificates (PEM) that client certificates must chain to; given: mutual TLS.

    Raises:
        ValueError: a certificate without its key or the reverse (naming both flags), a client CA without a server
            certificate, a file that cannot be read or is not PEM (naming the path), or a key that does not
            match the certificate.
    """
    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ValueError(f"{given} needs {missing}: TLS takes the certificate (--tls-cert) and its key (--tls-key)")
    if client_ca is not None and cert is None:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key: clients verify the server too")
    if cert is None or key is None:
        return
    read_pem("--tls-cert", cert)
    read_pem("--tls-key", key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, ValueError) as exc:  # ValueError: from _no_password
        reason = getattr(exc, "reason", None) or exc
        raise ValueError(
            f"--tls-cert {cert!r} with --tls-key {key!r}: {reason} (the key must be the certificate's, unencrypted)"
        ) from None
    if client_ca is not None:
        read_pem("--tls-client-ca", client_ca)
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ValueError(f"--tls-client-ca {client_ca!r}: {exc.reason or exc}") from None


def server_credentials(cert: str, key: str, client_ca: str | None = None) -> grpc.ServerCredentials:
    """gRPC server credentials: TLS with ``cert`` and ``key``; with ``client_ca``, client certificates signed by
    it are required (mutual TLS). The files are read now (checked first with :func:`check_tls_files`)."""
    root = read_pem("--tls-client-ca", client_ca) if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(read_pem("--tls-key", key), read_pem("--tls-cert", cert))],
        root_certificates=root,
        require_client_auth=client_ca is not None,
    )
