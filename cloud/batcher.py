"""Dynamic batching on the server's event loop: requests for the same tail queue up and run as one ONNX Runtime
batch.

The knobs are Triton's: a batch holds at most ``max_batch_size`` samples, and waits at most ``max_queue_delay_us``
for more requests to join it, counted from its oldest request's arrival or from the end of the previous batch,
whichever is later (so the clients a batch answered can rejoin the next one, rather than settling into two
half-size cohorts that take turns). With a delay of 0 nothing waits on purpose, yet batches still form under load:
requests that arrive while a batch runs make up the next one. The queue is bounded
(``max_queue_size`` samples): past it, :class:`~cloud.errors.Overloaded` (``RESOURCE_EXHAUSTED``) with a retry
hint, never unbounded memory.

Requests wait as futures on the event loop and a batch runs in a worker thread (ONNX Runtime releases the GIL),
so a request costs no thread of its own and no thread switch: one hand-off to the worker and one back per batch.

Only requests whose unbatched inputs are byte-identical share a batch (an int8 tail's scale and zero point are
per request), so batching never changes an answer: each request gets exactly its own rows of the output.
Requests whose inputs differ in a later dimension (a text tail's sequence length) are padded with zeros at the end
to the longest in the batch: a text tail's attention mask is 0 there, which hides the padding from every real
token (tests/integration/test_text.py checks batched answers against unbatched ones).

Example:
    >>> batcher = Batcher(lambda feeds: session.run(None, feeds)[0], ("x",), BatchConfig())   # doctest: +SKIP
    >>> logits = await batcher.infer({"x": x}, timeout=1.0)                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from cloud.errors import DeadlineExceeded, Overloaded

__all__ = ["BatchConfig", "Batcher"]

Feeds = Mapping[str, np.ndarray]

_NO_DEADLINE_S = 1e6


@dataclass(frozen=True)
class BatchConfig:
    """How requests for one tail are batched.

    Args:
        enabled: False runs each request by itself (several at once, in the worker threads).
        max_batch_size: the most samples in one ONNX Runtime run (a larger request runs alone).
        max_queue_delay_us: how long a batch may wait for more requests to join it, counted from its oldest
            request's arrival or, if later, from the end of the previous batch (so the requests answered by one
            batch can rejoin the next instead of splitting the clients into half-size cohorts).
        max_queue_size: samples allowed to wait per tail (with batching off: requests running at once per tail);
            past it requests are refused with RESOURCE_EXHAUSTED and a retry hint.
    """

    enabled: bool = True
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    max_queue_size: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 4096:
            raise ValueError(f"max_batch_size must be in 1..4096, got {self.max_batch_size}")
        if not 0 <= self.max_queue_delay_us <= 1_000_000:
            raise ValueError(f"max_queue_delay_us must be in 0..1000000 (1 s), got {self.max_queue_delay_us}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """The rows of ``arrays`` in one array; where their later dimensions differ, each padded with zeros at the end."""
    shape = arrays[0].shape[1:]
    if all(a.shape[1:] == shape for a in arrays):
        return np.concatenate(arrays)
    longest = np.max([a.shape[1:] for a in arrays], axis=0)
    out = np.zeros((sum(len(a) for a in arrays), *longest), dtype=arrays[0].dtype)
    start = 0
    for a in arrays:
        out[(slice(start, start + len(a)), *(slice(0, d) for d in a.shape[1:]))] = a
        start += len(a)
    return out


class _Item:
    __slots__ = ("deadline", "feeds", "future", "key", "n", "queued_at")

    def __init__(
        self, feeds: Feeds, n: int, key: bytes, future: asyncio.Future[np.ndarray], timeout: float | None
    ) -> None:
        self.feeds = feeds
        self.n = n
        self.key = key
        self.future = future
        self.queued_at = time.monotonic()
        self.deadline = self.queued_at + timeout if timeout is not None and timeout < _NO_DEADLINE_S else None


class Batcher:
    """One tail's queue; batches run in ``executor`` (default: the loop's), one at a time.

    Args:
        run: runs the tail on feeds (a batch) and returns the output, rows in input order.
        batched: the names of the inputs with a batch dimension; the others must be equal within a batch.
        config: the knobs.
        on_batch: called with each run's sample count and time in seconds (for metrics).
        executor: where runs happen.
    """

    def __init__(
        self,
        run: Callable[[Feeds], np.ndarray],
        batched: Collection[str],
        config: BatchConfig,
        on_batch: Callable[[int, float], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._run = run
        self._batched = frozenset(batched)
        self.config = config
        self._on_batch = on_batch
        self._executor = executor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Item] = deque()
        self._queued = 0  # samples waiting (batching) or running (batching off)
        self._running = False
        self._free_since = 0.0  # when the last batch ended: a batch may gather from then on, up to the delay
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._per_sample_s = 1e-3  # EWMA of run time per sample, for the retry hint

    @property
    def depth(self) -> int:
        """Samples waiting (with batching off: running)."""
        return self._queued

    async def infer(self, feeds: Feeds, timeout: float | None = None) -> np.ndarray:
        """Run ``feeds`` (validated already) in a batch and return its rows of the output.

        Raises:
            Overloaded: the queue is full (``retry_after_ms`` says when to try again).
            DeadlineExceeded: ``timeout`` passed before its batch was formed (it does not run).
        """
        n = next((int(a.shape[0]) for name, a in feeds.items() if name in self._batched), 1)
        loop = asyncio.get_running_loop()
        if not self.config.enabled or self._closed or not self._bind(loop):
            return await self._run_alone(loop, feeds, n)
        if self._queued + n > self.config.max_queue_size:
            raise self._refuse()
        key = b"".join(a.tobytes() for name, a in sorted(feeds.items()) if name not in self._batched)
        item = _Item(feeds, n, key, loop.create_future(), timeout)
        self._queue.append(item)
        self._queued += n
        self._schedule()
        return await item.future  # a deadline is checked when the batch is formed (no timer per request)

    def close(self) -> None:
        """Retire: what is queued still runs; later requests run alone (nothing is dropped)."""
        self._closed = True

    def _bind(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Batch on ``loop``; False when another loop still has work here (the request then runs alone)."""
        if self._loop is not loop:
            if self._queue or self._running:
                return False
            self._loop, self._timer = loop, None
        return True

    def _refuse(self) -> Overloaded:
        wait_ms = max(1, round(self._queued * self._per_sample_s * 1e3))
        return Overloaded(
            f"queue full: {self._queued} samples waiting for this tail (max_queue_size {self.config.max_queue_size})",
            retry_after_ms=wait_ms,
        )

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, feeds: Feeds, n: int) -> np.ndarray:
        if self._queued + n > self.config.max_queue_size:
            raise self._refuse()
        self._queued += n
        try:
            return await loop.run_in_executor(self._executor, self._timed, feeds, n)
        finally:
            self._queued -= n

    def _schedule(self) -> None:
        """Start a batch now if one is due, else set a timer for when the oldest request has waited enough."""
        if self._running or not self._queue or self._loop is None:
            return
        since = max(self._queue[0].queued_at, self._free_since)
        wait = since + self.config.max_queue_delay_us / 1e6 - time.monotonic()
        if wait <= 0 or self._queued >= self.config.max_batch_size:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._launch()
        elif self._timer is None:
            self._timer = self._loop.call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _launch(self) -> None:
        batch = self._live(self._take())
        if not batch:
            self._schedule()
            return
        assert self._loop is not None
        self._running = True
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {
                name: _stack([item.feeds[name] for item in batch]) if name in self._batched else array
                for name, array in batch[0].feeds.items()
            }
        run = self._loop.run_in_executor(self._executor, self._timed, feeds, sum(item.n for item in batch))
        run.add_done_callback(lambda done: self._finish(batch, done))

    @staticmethod
    def _live(items: list[_Item]) -> list[_Item]:
        """``items`` less those whose RPC was cancelled and those past their deadline (these get the error)."""
        now, live = time.monotonic(), []
        for item in items:
            if item.future.done():
                continue
            if item.deadline is not None and now > item.deadline:
                waited = now - item.queued_at
                item.future.set_exception(DeadlineExceeded(f"deadline passed in the queue (waited {waited:.3f} s)"))
                continue
            live.append(item)
        return live

    def _take(self) -> list[_Item]:
        """The oldest item and the queued items with its key, up to ``max_batch_size`` samples, in order."""
        first = self._queue.popleft()
        batch, total, rest = [first], first.n, deque[_Item]()
        while self._queue:
            item = self._queue.popleft()
            if item.key == first.key and total + item.n <= self.config.max_batch_size:
                batch.append(item)
                total += item.n
            else:
                rest.append(item)
        self._queue = rest
        self._queued -= total
        return batch

    def _finish(self, batch: list[_Item], done: asyncio.Future[np.ndarray]) -> None:
        self._running = False
        self._free_since = time.monotonic()
        error = done.exception()
        start = 0
        for item in batch:
            if not item.future.done():
                if error is not None:
                    item.future.set_exception(error)
                else:
                    item.future.set_result(done.result()[start : start + item.n])
            start += item.n
        self._schedule()

    def _timed(self, feeds: Feeds, n: int) -> np.ndarray:
        start = time.perf_counter()
        out = self._run(feeds)
        took = time.perf_counter() - start
        self._per_sample_s += 0.1 * (took / n - self._per_sample_s)
        if self._on_batch is not None:
            self._on_batch(n, took)
        return out
