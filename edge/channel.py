"""How the edge reaches the cloud: one replica or several (client-side round robin), plaintext, TLS or mutual TLS.

``--cloud`` names one replica (``HOST:PORT``, or any gRPC target such as ``dns:///cloud.internal:8001``) or
several, comma-separated. gRPC's name syntax lists several addresses only as IP literals of one family
(``ipv4:10.0.0.1:8001,10.0.0.2:8001`` or ``ipv6:[fd00::1]:8001,[fd00::2]:8001``), so that is what a list becomes,
with the ``round_robin`` load-balancing policy: each call goes to the next replica that is connected, and a
replica that goes away is skipped until it is back.

Example:
    >>> CloudTarget.parse("127.0.0.1:8001,127.0.0.1:8002").target
    'ipv4:127.0.0.1:8001,127.0.0.1:8002'
    >>> tls = ClientTLS(ca="ca.pem", cert="edge.pem", key="edge.key")     # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc

from protos.credentials import read_pem

__all__ = ["ClientTLS", "CloudTarget"]

Options = list[tuple[str, int | str]]


@dataclass(frozen=True)
class ClientTLS:
    """TLS to the cloud: verify it with ``ca`` (PEM; None: the system's roots); present ``cert`` and ``key`` for
    mutual TLS; ``server_name``: the name the server's certificate must carry when it is not the host dialled
    (needed for several replicas on different hosts, which must then share that name). Files are read at once.

    Raises:
        ValueError: ``cert`` without ``key`` or the reverse, or a file that cannot be read or is not PEM.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cloud-cert and --cloud-key go together: mutual TLS needs the certificate and its key")
        if self.server_name == "":
            raise ValueError("server_name must not be empty (None: the host dialled)")
        self.credentials()  # every file read and checked now, not at the first call

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (reads the files)."""
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem("--cloud-ca", self.ca) if self.ca else None,
            private_key=read_pem("--cloud-key", self.key) if self.key else None,
            certificate_chain=read_pem("--cloud-cert", self.cert) if self.cert else None,
        )


def _address(entry: str) -> tuple[str, int, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` with an IP-literal host: (host, port, IP version)."""
    host, sep, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    version: int
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        version = 0
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or version == 0:
        raise ValueError(
            f"cloud replica {entry!r}: several replicas are given as IP:PORT (IPv4) or [IP]:PORT (IPv6), e.g."
            " 10.0.0.1:8001,10.0.0.2:8001 (gRPC has no list of DNS names; one DNS name can resolve to all of them)"
        )
    return host, int(port), version


@dataclass(frozen=True)
class CloudTarget:
    """The gRPC target for ``--cloud``; ``hosts``: the replicas' hosts when several are listed (round robin over
    them), empty for one replica."""

    target: str
    hosts: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> CloudTarget:
        """One replica (passed to gRPC unchanged) or a comma-separated list of IP:PORT of one IP version.

        Raises:
            ValueError: an empty entry, a list entry that is not an IP literal with a port, or mixed IP versions.
        """
        entries = [e.strip() for e in spec.split(",")]
        if not all(entries):
            raise ValueError(f"--cloud {spec!r}: an empty entry; give HOST:PORT or a comma-separated list of them")
        if len(entries) == 1:
            return cls(entries[0], ())
        addresses = [_address(e) for e in entries]
        versions = {version for _, _, version in addresses}
        if len(versions) > 1:
            raise ValueError(f"--cloud {spec!r}: mixes IPv4 and IPv6 replicas; gRPC lists one family at a time")
        if versions == {6}:
            return cls("ipv6:" + ",".join(f"[{h}]:{p}" for h, p, _ in addresses), tuple(h for h, _, _ in addresses))
        return cls("ipv4:" + ",".join(f"{h}:{p}" for h, p, _ in addresses), tuple(h for h, _, _ in addresses))

    @property
    def balanced(self) -> bool:
        """Whether calls are spread over several replicas."""
        return len(self.hosts) > 1

    def options(self, tls: ClientTLS | None) -> Options:
        """Channel options: ``round_robin`` for several replicas; the name TLS verifies, when it must be set.

        Raises:
            ValueError: TLS to replicas on different hosts without ``tls.server_name``.
        """
        options: Options = [("grpc.lb_policy_name", "round_robin")] if self.balanced else []
        if tls is None:
            return options
        name = tls.server_name
        if name is None and self.balanced:
            if len(set(self.hosts)) > 1:
                raise ValueError(
                    "TLS to replicas on different hosts needs --cloud-server-name NAME: the name each replica's"
                    " certificate carries"
                )
            name = self.hosts[0]
        if name is not None:
            options.append(("grpc.default_authority", f"[{name}]" if ":" in name else name))
        return options
