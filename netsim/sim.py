"""``NetSim``: netsim in a background thread, for tests and benchmarks that are not themselves asyncio code.

Its event loop runs in a daemon thread; every method hands its work to that loop
(``asyncio.run_coroutine_threadsafe``) and waits for the result, so it may be called from any thread. The
HTTP API listens too (on a free port unless told otherwise), so a subprocess can change the network as well.

Example:
    >>> with NetSim() as net:  # doctest: +SKIP
    ...     target = net.create_proxy("cloud", upstream="127.0.0.1:8001")  # "127.0.0.1:PORT"
    ...     net.apply_profile("cloud", "4g")
    ...     net.update_toxic("cloud", "profile_latency_downstream", attributes={"latency": 100})
    ...     net.set_enabled("cloud", False)  # the cloud is unreachable
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from netsim.api import ApiServer
from netsim.collection import ProxyCollection
from netsim.profiles import Profile, apply_profile
from netsim.proxy import ProxyConfig
from netsim.toxics import Toxic

__all__ = ["NetSim"]

T = TypeVar("T")


class NetSim:
    """``with NetSim() as net: net.create_proxy(...)`` — proxies, toxics and the API on a background loop."""

    def __init__(self, api_host: str = "127.0.0.1", api_port: int = 0, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._api_host = api_host
        self._api_port = api_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxies: ProxyCollection | None = None
        self._api: ApiServer | None = None

    @property
    def api_port(self) -> int:
        """The HTTP API's port."""
        return self._started(self._api).port

    @property
    def api_address(self) -> str:
        """``host:port`` of the HTTP API (Toxiproxy clients take ``http://`` + this)."""
        return self._started(self._api).address

    def start(self) -> NetSim:
        """Start the loop thread, then the API; returns once the API is listening."""
        if self._loop is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,), name="netsim", daemon=True)
        self._thread.start()
        try:
            self._run(self._start_api)
        except BaseException:
            self.close()
            raise
        return self

    async def _start_api(self) -> None:
        self._proxies = ProxyCollection()
        self._api = ApiServer(self._proxies, self._api_host, self._api_port)
        await self._api.start()

    def close(self) -> None:
        """Stop the API and every proxy (closing their connections), then the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._close)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout_s)
            self._loop = self._thread = None

    async def _close(self) -> None:
        if self._api is not None:
            await self._api.close()
        if self._proxies is not None:
            await self._proxies.close()

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True) -> str:
        """Create (and start) a proxy; returns its listen address ``host:port`` with the port bound."""

        async def create() -> str:
            proxy = await self._collection().create(ProxyConfig(name, upstream, listen, enabled))
            return proxy.listen

        return self._run(create)

    def proxy(self, name: str) -> dict[str, Any]:
        """The proxy's JSON form (as ``GET /proxies/{name}``)."""
        return self._call(lambda: self._collection().get(name).to_json())

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Disable (close connections, refuse new ones) or enable a proxy."""
        self._run(lambda: self._collection().update(name, {"enabled": enabled}))

    def delete_proxy(self, name: str) -> None:
        self._run(lambda: self._collection().delete(name))

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        """Add a toxic; connections already open apply it to the data that arrives next."""
        return self._call(lambda: self._collection().get(proxy).add_toxic(toxic))

    def update_toxic(
        self, proxy: str, name: str, attributes: dict[str, float] | None = None, toxicity: float | None = None
    ) -> Toxic:
        """Change a toxic's attributes (merged) and/or toxicity."""
        changes: dict[str, Any] = {"attributes": attributes or {}}
        if toxicity is not None:
            changes["toxicity"] = toxicity
        return self._call(lambda: self._collection().get(proxy).update_toxic(name, changes))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call(lambda: self._collection().get(proxy).remove_toxic(name))

    def apply_profile(self, proxy: str, profile: Profile | str) -> list[Toxic]:
        """Replace the proxy's profile toxics with ``profile``'s (a :class:`Profile` or a name/spec string)."""
        return self._call(lambda: apply_profile(self._collection().get(proxy), profile))

    def connection_count(self, proxy: str) -> int:
        """Connections open through ``proxy`` now."""
        return self._call(lambda: self._collection().get(proxy).connection_count)

    def reset(self) -> None:
        """Enable every proxy, remove every toxic."""
        self._run(lambda: self._collection().reset())

    def _collection(self) -> ProxyCollection:
        return self._started(self._proxies)

    def _started(self, value: T | None) -> T:
        if value is None:
            raise RuntimeError("NetSim is not running; use 'with NetSim() as net:' or call start()")
        return value

    def _call(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self._run(call)

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the loop (it is called there, so it only touches state from the loop's thread)."""
        loop = self._started(self._loop)

        async def job() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(job(), loop).result(self.timeout_s)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def __enter__(self) -> NetSim:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
