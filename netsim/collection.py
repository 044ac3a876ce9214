"""All proxies of one netsim, by name: what the HTTP API and :class:`netsim.NetSim` operate on.

Example:
    >>> async def demo() -> None:
    ...     proxies = ProxyCollection()
    ...     proxy = await proxies.create(ProxyConfig("cloud", upstream="127.0.0.1:8001"))
    ...     await proxies.update("cloud", {"enabled": False})  # closes its connections, refuses new ones
    ...     await proxies.reset()  # every proxy enabled, every toxic removed
    ...     await proxies.close()
"""

from __future__ import annotations

from typing import Any

from netsim.errors import ConflictError, NotFoundError, names_or_none
from netsim.proxy import Proxy, ProxyConfig

__all__ = ["ProxyCollection"]


class ProxyCollection:
    """Proxies by name. Use from the event loop the proxies run on."""

    def __init__(self) -> None:
        self._proxies: dict[str, Proxy] = {}

    def names(self) -> list[str]:
        return list(self._proxies)

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``; :class:`NotFoundError` lists the ones there are."""
        if name not in self._proxies:
            raise NotFoundError(f"proxy {name!r} not found; proxies: {names_or_none(self.names())}")
        return self._proxies[name]

    async def create(self, config: ProxyConfig) -> Proxy:
        """Add a proxy and start it if ``config.enabled``; :class:`ConflictError` if the name is taken."""
        if config.name in self._proxies:
            raise ConflictError(f"proxy {config.name!r} already exists; update or delete it")
        proxy = Proxy(config)
        self._proxies[config.name] = proxy
        try:
            if config.enabled:
                await proxy.start()
        except BaseException:
            del self._proxies[config.name]
            raise
        return proxy

    async def update(self, name: str, changes: Any) -> Proxy:
        """Change ``listen``, ``upstream`` and/or ``enabled`` (Toxiproxy's ``POST /proxies/{name}`` body)."""
        proxy = self.get(name)
        await proxy.reconfigure(proxy.config.updated(changes))
        return proxy

    async def delete(self, name: str) -> None:
        """Stop a proxy (closing its connections) and forget it."""
        proxy = self.get(name)
        del self._proxies[name]
        await proxy.stop()

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``)."""
        for proxy in self._proxies.values():
            proxy.reset_toxics()
            await proxy.start()

    async def close(self) -> None:
        """Stop every proxy and forget them all."""
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.stop()

    def to_json(self) -> dict[str, Any]:
        """``{name: proxy JSON}``, as Toxiproxy's ``GET /proxies``."""
        return {name: proxy.to_json() for name, proxy in self._proxies.items()}
