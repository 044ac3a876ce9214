"""A TCP proxy with toxics: listens on one address, forwards every connection to an upstream address.

Toxics (see :mod:`netsim.toxics`) can be added, updated and removed at any time; connections already open
apply the change to the data that arrives afterwards. Disabling a proxy closes its connections and stops
listening, so new connections are refused; enabling it listens again on the same port (as Toxiproxy does).

Example:
    >>> async def demo() -> None:
    ...     proxy = Proxy(ProxyConfig("cloud", upstream="127.0.0.1:8001"))
    ...     await proxy.start()  # listens on 127.0.0.1 and a free port: proxy.listen
    ...     proxy.add_toxic(Toxic("latency", "downstream", {"latency": 50}))
    ...     await proxy.stop()
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from netsim.errors import BadRequestError, ConflictError, NotFoundError, names_or_none
from netsim.link import Connection, close_writer
from netsim.toxics import Toxic

__all__ = ["Proxy", "ProxyConfig", "format_address", "parse_address"]

log = logging.getLogger("netsim")

_NAME = re.compile(r"[^/\s]+")
_CONFIG_FIELDS = ("name", "listen", "upstream", "enabled")
_IGNORED_FIELDS = ("toxics",)  # what GET returns but a create or update does not take


def parse_address(address: Any, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``; port 0 asks for a free port when listening."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise BadRequestError(f"{what} {address!r} is not HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:8474)")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ProxyConfig:
    """A proxy's settings, as in Toxiproxy's JSON; validated on construction.

    ``enabled`` is what was asked for; :attr:`Proxy.enabled` says whether the proxy is listening now.
    """

    name: str
    upstream: str
    listen: str = "127.0.0.1:0"
    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise BadRequestError(f"proxy name {self.name!r} is invalid; it must be non-empty, without '/' or spaces")
        parse_address(self.listen, "listen address")
        parse_address(self.upstream, "upstream address")
        if not isinstance(self.enabled, bool):
            raise BadRequestError(f"enabled must be true or false, got {self.enabled!r}")

    @classmethod
    def from_json(cls, data: Any) -> ProxyConfig:
        """From an API body ``{"name", "listen", "upstream", "enabled"}``; name and upstream are required."""
        data = _fields(data, "proxy")
        missing = [key for key in ("name", "upstream") if not data.get(key)]
        if missing:
            raise BadRequestError(f"proxy is missing required field(s): {', '.join(missing)}")
        return cls(**data)

    def updated(self, changes: Any) -> ProxyConfig:
        """A copy with new ``listen``, ``upstream`` and/or ``enabled``; the name cannot change."""
        changes = _fields(changes, "proxy update")
        if changes.get("name", self.name) != self.name:
            raise BadRequestError(f"cannot rename proxy {self.name!r}; delete it and create {changes['name']!r}")
        return replace(self, **changes)


def _fields(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequestError(f"{what} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_CONFIG_FIELDS) - set(_IGNORED_FIELDS))
    if unknown:
        valid = ", ".join(_CONFIG_FIELDS)
        raise BadRequestError(f"unknown field(s) {', '.join(unknown)} in {what}; valid fields: {valid}")
    return {key: value for key, value in data.items() if key in _CONFIG_FIELDS}


class Proxy:
    """One proxy and its toxics. Use from its event loop only (:class:`netsim.NetSim` does that for threads)."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._toxics: dict[str, Toxic] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()  # asyncio's tasks running _handle
        self._forwarders: set[asyncio.Task[Any]] = set()  # ours, running _forward
        self._connections: set[Connection] = set()
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def listen(self) -> str:
        """The listen address; once started, with the port actually bound."""
        return self.config.listen

    @property
    def enabled(self) -> bool:
        return self._server is not None

    @property
    def connection_count(self) -> int:
        """Connections open through the proxy now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen (if not already); raises :class:`ConflictError` if the address is taken."""
        async with self._lock:
            await self._start()

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        async with self._lock:
            await self._stop()

    async def reconfigure(self, config: ProxyConfig) -> None:
        """Apply new settings: a new listen or upstream address restarts the proxy (closing its connections)."""
        async with self._lock:
            moved = (config.listen, config.upstream) != (self.config.listen, self.config.upstream)
            if moved or not config.enabled:
                await self._stop()
            self.config = config
            if config.enabled:
                await self._start()

    async def _start(self) -> None:
        if self._server is not None:
            return
        host, port = parse_address(self.config.listen, "listen address")
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            raise ConflictError(f"proxy {self.name!r} cannot listen on {self.config.listen}: {exc.strerror}") from exc
        bound_port = self._server.sockets[0].getsockname()[1]
        self.config = replace(self.config, listen=format_address(host, bound_port), enabled=True)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in self._forwarders:
            task.cancel()
        await asyncio.gather(*self._forwarders, *self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio owns this task (and Python 3.11 logs an error when it ends cancelled), so the work that
        # _stop() may cancel runs in a task of our own.
        handler, forwarder = asyncio.current_task(), asyncio.create_task(self._forward(reader, writer))
        assert handler is not None
        self._handlers.add(handler)
        self._forwarders.add(forwarder)
        try:
            await asyncio.wait([forwarder])
        finally:
            self._handlers.discard(handler)
            self._forwarders.discard(forwarder)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            if self._server is None:  # accepted just before the proxy was disabled
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*parse_address(self.config.upstream))
            connection = Connection(self.toxics_for, (reader, writer), (upstream_reader, upstream_writer))
            self._connections.add(connection)
            try:
                await connection.run()
            finally:
                self._connections.discard(connection)
        except OSError as exc:
            log.info("proxy %s: cannot reach upstream %s: %s", self.name, self.config.upstream, exc)
        except Exception:
            log.exception("proxy %s: connection failed", self.name)
        finally:
            await close_writer(writer)
            if upstream_writer is not None:
                await close_writer(upstream_writer)

    def toxics(self) -> list[Toxic]:
        """All toxics, in the order they were added."""
        return list(self._toxics.values())

    def toxics_for(self, stream: str) -> list[Toxic]:
        """The toxics on one stream (``upstream`` or ``downstream``), in order."""
        return [toxic for toxic in self._toxics.values() if toxic.stream == stream]

    def toxic(self, name: str) -> Toxic:
        """The toxic called ``name``; :class:`NotFoundError` lists the ones there are."""
        if name not in self._toxics:
            known = names_or_none(list(self._toxics))
            raise NotFoundError(f"toxic {name!r} not found on proxy {self.name!r}; toxics: {known}")
        return self._toxics[name]

    def add_toxic(self, toxic: Toxic) -> Toxic:
        """Add a toxic (at the end of its stream's chain); open connections apply it to new data."""
        if toxic.name in self._toxics:
            raise ConflictError(f"toxic {toxic.name!r} already exists on proxy {self.name!r}; update or delete it")
        self._toxics[toxic.name] = toxic
        self._sync()
        return toxic

    def update_toxic(self, name: str, changes: Any) -> Toxic:
        """Change a toxic's ``attributes`` (merged) and/or ``toxicity``: see :meth:`Toxic.updated`."""
        toxic = self.toxic(name).updated(changes)
        self._toxics[name] = toxic
        self._sync()
        return toxic

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; data already delayed by it keeps its delay."""
        self.toxic(name)
        del self._toxics[name]
        self._sync()

    def reset_toxics(self) -> None:
        """Remove every toxic."""
        self._toxics.clear()
        self._sync()

    def _sync(self) -> None:
        for connection in self._connections:
            connection.sync()

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON form: name, listen, upstream, enabled and toxics."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.config.upstream,
            "enabled": self.enabled,
            "toxics": [toxic.to_json() for toxic in self._toxics.values()],
        }
