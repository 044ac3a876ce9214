"""One proxied TCP connection: two directions, each a chain of toxic stages between a socket reader and writer.

For each direction a *pump* reads chunks, passes each through the direction's stages (one per toxic, in the
order the toxics were added) and appends what comes out, with due times, to a queue; a *deliverer* writes the
queue's pieces when they are due. Due times only ever grow along the queue, so data keeps its order however
toxics change. The stages are re-synchronised with the proxy's toxics whenever those change, so an added,
updated or removed toxic applies to the data that arrives afterwards, on connections already open.

End of stream is passed on as a half-close (``write_eof``); the connection closes once both directions have
ended, when a stage asks (``timeout``, ``limit_data``), or is reset (``reset_peer``: SO_LINGER 0, then close).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

from netsim.stages import CLOSE, EOF, Piece, Stage, make_stage
from netsim.toxics import Toxic

__all__ = ["Connection", "close_writer"]

log = logging.getLogger("netsim")

_READ_SIZE = 64 * 1024
_MAX_QUEUED = 8 * 1024 * 1024  # bytes queued in one direction before the pump stops reading (back-pressure)
_EARLY_S = 0.001  # pieces due within this much are written together, in one wake-up

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Direction:
    """One direction (``upstream`` or ``downstream``) of a connection."""

    def __init__(self, connection: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connection = connection
        self.reader = reader
        self.writer = writer
        self.stages: dict[str, Stage] = {}
        self.queue: deque[Piece] = deque()
        self.queued_bytes = 0
        self.last_due = 0.0
        self.woken = asyncio.Event()
        self.has_room = asyncio.Event()
        self.has_room.set()
        self.ended = False

    def sync(self, toxics: list[Toxic]) -> None:
        """Make the stages match ``toxics``: new ones start, updated ones restart, removed ones stop."""
        stages: dict[str, Stage] = {}
        for toxic in toxics:
            stage = self.stages.pop(toxic.name, None)
            if stage is not None and stage.toxic.type != toxic.type:
                stage.end()
                stage = None
            if stage is None:
                stage = make_stage(toxic, self.connection)
            elif stage.toxic is not toxic:
                stage.update(toxic)
            stages[toxic.name] = stage
        for removed in self.stages.values():
            removed.end()
        self.stages = stages

    def stop(self) -> None:
        for stage in self.stages.values():
            stage.end()

    async def pump(self) -> None:
        """Read chunks and queue what the stages make of them, until end of stream."""
        loop = asyncio.get_running_loop()
        while True:
            while self.queued_bytes > _MAX_QUEUED:
                self.has_room.clear()
                await self.has_room.wait()
            data = await self.reader.read(_READ_SIZE)
            pieces: list[Piece] = [(loop.time(), data, "" if data else EOF)]
            for stage in list(self.stages.values()):
                pieces = stage.feed(pieces)
            self._enqueue(pieces)
            if not data:
                return

    def _enqueue(self, pieces: list[Piece]) -> None:
        for due, data, mark in pieces:
            self.last_due = max(due, self.last_due)
            self.queue.append((self.last_due, data, mark))
            self.queued_bytes += len(data)
        if pieces:
            self.woken.set()

    async def deliver(self) -> None:
        """Write queued pieces when due; pass on end of stream, or close the connection when asked to."""
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.woken.clear()
                await self.woken.wait()
            delay = self.queue[0][0] - loop.time()
            if delay > _EARLY_S:
                await asyncio.sleep(delay)  # later pieces are never due earlier than the head
            mark = self._write_due(loop.time() + _EARLY_S)
            await self.writer.drain()
            if self.queued_bytes <= _MAX_QUEUED:
                self.has_room.set()
            if mark == EOF:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                self.ended = True
                self.connection.direction_ended()
                return
            if mark == CLOSE:
                self.connection.close()
                return

    def _write_due(self, until: float) -> str:
        chunks = []
        mark = ""
        while self.queue and self.queue[0][0] <= until and not mark:
            _, data, mark = self.queue.popleft()
            if data:
                chunks.append(data)
                self.queued_bytes -= len(data)
        if chunks:
            self.writer.writelines(chunks)
        return mark


class Connection:
    """A client connection and its upstream connection, joined through the proxy's toxics.

    Implements :class:`netsim.stages.Actions` for its stages (timers, close, reset).
    """

    def __init__(self, toxics_for: Callable[[str], list[Toxic]], client: Streams, upstream: Streams) -> None:
        self._loop = asyncio.get_running_loop()
        self._toxics_for = toxics_for
        self._writers = (client[1], upstream[1])
        self._done = asyncio.Event()
        self._reset = False
        self.directions = {
            "upstream": _Direction(self, client[0], upstream[1]),
            "downstream": _Direction(self, upstream[0], client[1]),
        }
        self.sync()

    def sync(self) -> None:
        """Re-read the proxy's toxics (call after any change)."""
        for stream, direction in self.directions.items():
            direction.sync(self._toxics_for(stream))

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(delay, callback)

    def close(self) -> None:
        """Close both sockets (what is already written is still sent)."""
        self._done.set()

    def reset(self) -> None:
        """Reset both sockets: SO_LINGER 0, then close, so the peers get a TCP RST."""
        self._reset = True
        self._done.set()

    def direction_ended(self) -> None:
        if all(direction.ended for direction in self.directions.values()):
            self._done.set()

    async def run(self) -> None:
        """Pipe both ways until the connection ends; then close (or reset) both sockets."""
        tasks = [
            asyncio.create_task(self._guard(job))
            for direction in self.directions.values()
            for job in (direction.pump(), direction.deliver())
        ]
        try:
            await self._done.wait()
        finally:
            for direction in self.directions.values():
                direction.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in self._writers:
                if self._reset:
                    _reset(writer)
                await close_writer(writer)

    async def _guard(self, job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        except OSError as exc:
            log.debug("connection ended: %s", exc)
            self.close()
        except Exception:
            log.exception("netsim connection failed")
            self.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream and wait until it is closed, ignoring errors from a peer that has gone."""
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
