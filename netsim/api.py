"""Toxiproxy's HTTP JSON API, enough of it that a Toxiproxy client (or a real Toxiproxy) can stand in.

==========================================  =========================================================
``GET /proxies``                            every proxy, ``{name: proxy}``
``POST /proxies``                           create ``{"name", "listen", "upstream", "enabled"}`` -> 201
``GET|POST|PATCH|DELETE /proxies/{name}``   show, update (e.g. ``{"enabled": false}``), delete -> 204
``GET|POST /proxies/{name}/toxics``         list, add ``{"name", "type", "stream", "toxicity", "attributes"}``
``GET|POST|PATCH|DELETE .../toxics/{toxic}``  show, update ``{"attributes": {...}, "toxicity": p}``, delete -> 204
``POST /reset``                             enable every proxy, remove every toxic -> 204
``GET /version``                            ``{"version": ...}``
==========================================  =========================================================

Errors are ``{"error": "...", "status": N}`` (400 bad input, 404 unknown name, 405, 409 name or address taken);
messages name what would be valid. Every response closes its connection (``Connection: close``). As Toxiproxy
does, requests from browsers (``User-Agent: Mozilla/...``) are refused, so a web page cannot drive the API.

Example:
    >>> async def demo() -> None:
    ...     api = ApiServer(ProxyCollection(), port=0)
    ...     port = await api.start()  # curl http://127.0.0.1:{port}/proxies
    ...     await api.close()
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from netsim.collection import ProxyCollection
from netsim.errors import BadRequestError, NetSimError, NotFoundError
from netsim.link import close_writer
from netsim.proxy import ProxyConfig, format_address
from netsim.toxics import Toxic

__all__ = ["VERSION", "ApiServer"]

VERSION = "netsim 0.1.0"

log = logging.getLogger("netsim")

_MAX_BODY = 1024 * 1024
_READ_TIMEOUT_S = 15.0
_ROUTE_LIST = "/proxies, /proxies/NAME, /proxies/NAME/toxics, /proxies/NAME/toxics/TOXIC, /reset, /version"

Handler = Callable[[list[str], Any], Awaitable[tuple[int, Any]]]


class _MethodNotAllowed(NetSimError):
    status = 405


class ApiServer:
    """The HTTP API over a :class:`ProxyCollection`, on ``host:port`` (port 0: a free one)."""

    def __init__(self, proxies: ProxyCollection, host: str = "127.0.0.1", port: int = 8474) -> None:
        self.proxies = proxies
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "proxies"): self._proxy_index,
            ("POST", "proxies"): self._proxy_create,
            ("GET", "proxies/{}"): self._proxy_show,
            ("POST", "proxies/{}"): self._proxy_update,
            ("PATCH", "proxies/{}"): self._proxy_update,
            ("DELETE", "proxies/{}"): self._proxy_delete,
            ("GET", "proxies/{}/toxics"): self._toxic_index,
            ("POST", "proxies/{}/toxics"): self._toxic_create,
            ("GET", "proxies/{}/toxics/{}"): self._toxic_show,
            ("POST", "proxies/{}/toxics/{}"): self._toxic_update,
            ("PATCH", "proxies/{}/toxics/{}"): self._toxic_update,
            ("DELETE", "proxies/{}/toxics/{}"): self._toxic_delete,
            ("POST", "reset"): self._reset,
            ("GET", "version"): self._version,
        }

    @property
    def address(self) -> str:
        """``host:port`` (the bound port once started)."""
        return format_address(self.host, self.port)

    async def start(self) -> int:
        """Listen; returns the port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop idle clients (the proxies keep running: close the collection for that)."""
        if self._server is not None:
            self._server.close()
            for writer in self._clients:
                writer.close()
            await asyncio.gather(*self._clients.values(), return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            request = await asyncio.wait_for(_read_request(reader, writer), _READ_TIMEOUT_S)
            if request is not None:
                status, payload = await self._answer(*request)
                writer.write(_response(status, payload))
                await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client went away or never sent a request
        finally:
            del self._clients[writer]
            await close_writer(writer)

    async def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        try:
            if headers.get("user-agent", "").startswith("Mozilla/"):
                return 403, {"error": "requests from browsers are not allowed", "status": 403}
            handler, params = self._route(method, target)
            return await handler(params, _json_body(body))
        except NetSimError as exc:
            return exc.status, {"error": str(exc), "status": exc.status}
        except Exception as exc:
            log.exception("netsim api: %s %s failed", method, target)
            return 500, {"error": f"internal error: {exc}", "status": 500}

    def _route(self, method: str, target: str) -> tuple[Handler, list[str]]:
        parts = [unquote(part) for part in urlsplit(target).path.strip("/").split("/")]
        shape = "/".join("{}" if i % 2 else part for i, part in enumerate(parts))
        handler = self._routes.get((method, shape))
        if handler is not None:
            return handler, parts[1::2]
        allowed = sorted(m for m, s in self._routes if s == shape)
        if allowed:
            raise _MethodNotAllowed(f"{method} is not allowed on {target}; allowed: {', '.join(allowed)}")
        raise NotFoundError(f"no such path {target!r}; paths: {_ROUTE_LIST}")

    async def _proxy_index(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, self.proxies.to_json()

    async def _proxy_create(self, params: list[str], body: Any) -> tuple[int, Any]:
        proxy = await self.proxies.create(ProxyConfig.from_json(body))
        return 201, proxy.to_json()

    async def _proxy_show(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, self.proxies.get(params[0]).to_json()

    async def _proxy_update(self, params: list[str], body: Any) -> tuple[int, Any]:
        proxy = await self.proxies.update(params[0], body)
        return 200, proxy.to_json()

    async def _proxy_delete(self, params: list[str], body: Any) -> tuple[int, Any]:
        await self.proxies.delete(params[0])
        return 204, None

    async def _toxic_index(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, [toxic.to_json() for toxic in self.proxies.get(params[0]).toxics()]

    async def _toxic_create(self, params: list[str], body: Any) -> tuple[int, Any]:
        proxy = self.proxies.get(params[0])
        return 200, proxy.add_toxic(Toxic.from_json(body)).to_json()

    async def _toxic_show(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, self.proxies.get(params[0]).toxic(params[1]).to_json()

    async def _toxic_update(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, self.proxies.get(params[0]).update_toxic(params[1], body).to_json()

    async def _toxic_delete(self, params: list[str], body: Any) -> tuple[int, Any]:
        self.proxies.get(params[0]).remove_toxic(params[1])
        return 204, None

    async def _reset(self, params: list[str], body: Any) -> tuple[int, Any]:
        await self.proxies.reset()
        return 204, None

    async def _version(self, params: list[str], body: Any) -> tuple[int, Any]:
        return 200, {"version": VERSION}


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, str, dict[str, str], bytes] | None:
    """``(method, target, headers, body)``, or ``None`` for a malformed request (answered with 400 here)."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, _ = request_line.split(" ")
        headers = dict(_header(line) for line in header_lines if line)
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= _MAX_BODY or "chunked" in headers.get("transfer-encoding", ""):
            raise ValueError(f"a body needs a Content-Length of at most {_MAX_BODY} bytes (no chunked encoding)")
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return method, target, headers, await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None  # closed before a whole request: nothing to answer
    except (ValueError, asyncio.LimitOverrunError) as exc:
        with suppress(OSError):
            writer.write(_response(400, {"error": f"malformed HTTP request: {exc}", "status": 400}))
        return None


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from exc


def _response(status: int, payload: Any) -> bytes:
    body = b"" if payload is None else (json.dumps(payload) + "\n").encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Length: {len(body)}", "Connection: close"]
    if body:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
