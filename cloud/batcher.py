"""Dynamic batching: requests for the same tail queue up and run as one ONNX Runtime batch.

The knobs are Triton's: a batch holds at most ``max_batch_size`` samples, and the first request in the queue waits
at most ``max_queue_delay_us`` for others to join it. With a delay of 0 nothing waits on purpose, yet batches still
form under load: requests that arrive while a batch runs make up the next one. The queue is bounded
(``max_queue_size`` samples): past it, :class:`~cloud.errors.Overloaded` (``RESOURCE_EXHAUSTED``) with a retry
hint, never unbounded memory.

Only requests whose unbatched inputs are byte-identical share a batch (an int8 tail's scale and zero point are
per request), so batching never changes an answer: each request gets exactly its own rows of the output.

Example:
    >>> batcher = Batcher(lambda feeds: session.run(None, feeds)[0], ("x",), BatchConfig())   # doctest: +SKIP
    >>> logits = batcher.infer({"x": x}, timeout=1.0)                                          # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
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
        enabled: False runs each request by itself, in the thread that received it.
        max_batch_size: the most samples in one ONNX Runtime run (a larger request runs alone).
        max_queue_delay_us: how long the oldest queued request waits for others to join its batch.
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


class _Item:
    __slots__ = ("feeds", "future", "key", "n", "queued_at")

    def __init__(self, feeds: Feeds, n: int, key: bytes) -> None:
        self.feeds = feeds
        self.n = n
        self.key = key
        self.future: Future[np.ndarray] = Future()
        self.queued_at = time.monotonic()


class Batcher:
    """One tail's queue and the thread that runs its batches (started at the first request).

    Args:
        run: runs the tail on feeds (a batch) and returns the output, rows in input order.
        batched: the names of the inputs with a batch dimension; the others must be equal within a batch.
        config: the knobs.
        on_batch: called with each batch's sample count and run time in seconds (for metrics).
    """

    def __init__(
        self,
        run: Callable[[Feeds], np.ndarray],
        batched: Collection[str],
        config: BatchConfig,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._batched = frozenset(batched)
        self.config = config
        self._on_batch = on_batch
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Item] = deque()
        self._queued = 0  # samples waiting (batching) or running (batching off)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._per_sample_s = 1e-3  # EWMA of run time per sample, for the retry hint

    @property
    def depth(self) -> int:
        """Samples waiting (with batching off: running)."""
        return self._queued

    def infer(self, feeds: Feeds, timeout: float | None = None) -> np.ndarray:
        """Run ``feeds`` (validated already) in a batch and return its rows of the output.

        Raises:
            Overloaded: the queue is full (``retry_after_ms`` says when to try again).
            DeadlineExceeded: ``timeout`` passed before the batch ran (the request is dropped from the queue).
        """
        n = self._rows(feeds)
        if not self.config.enabled:
            return self._run_alone(feeds, n)
        item = self._enqueue(feeds, n)
        if timeout is not None and timeout > _NO_DEADLINE_S:
            timeout = None  # gRPC reports "no deadline" as a huge number of seconds
        try:
            return item.future.result(timeout)
        except TimeoutError:
            if item.future.cancel():
                raise DeadlineExceeded(f"deadline passed with the request still queued ({timeout:.3f} s)") from None
            return item.future.result()

    def close(self) -> None:
        """Finish what is queued, then let the thread end; later requests run alone (nothing is dropped)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _rows(self, feeds: Feeds) -> int:
        return next((int(a.shape[0]) for name, a in feeds.items() if name in self._batched), 1)

    def _refuse(self) -> Overloaded:
        wait_ms = max(1, round(self._queued * self._per_sample_s * 1e3))
        return Overloaded(
            f"queue full: {self._queued} samples waiting for this tail (max_queue_size {self.config.max_queue_size})",
            retry_after_ms=wait_ms,
        )

    def _run_alone(self, feeds: Feeds, n: int) -> np.ndarray:
        with self._cond:
            if self._queued + n > self.config.max_queue_size:
                raise self._refuse()
            self._queued += n
        try:
            return self._timed(feeds, n)
        finally:
            with self._cond:
                self._queued -= n

    def _enqueue(self, feeds: Feeds, n: int) -> _Item:
        key = b"".join(a.tobytes() for name, a in sorted(feeds.items()) if name not in self._batched)
        item = _Item(feeds, n, key)
        with self._cond:
            closed = self._closed
            if not closed:
                self._append(item)
        if closed:  # a retired model's tail: run the request here, drop nothing
            item.future.set_running_or_notify_cancel()
            item.future.set_result(self._timed(feeds, n))
        return item

    def _append(self, item: _Item) -> None:
        """Queue ``item`` (the lock is held); wakes the worker when it waits for a first item or a full batch."""
        n = item.n
        if self._queued + n > self.config.max_queue_size:
            raise self._refuse()
        was_empty = not self._queue
        self._queue.append(item)
        self._queued += n
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgesplit-batcher", daemon=True)
            self._thread.start()
        if was_empty or self._queued >= self.config.max_batch_size:
            self._cond.notify()

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)

    def _next_batch(self) -> list[_Item] | None:
        delay = self.config.max_queue_delay_us / 1e6
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued_at + delay
            while self._queued < self.config.max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._take()

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

    def _execute(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            if len(live) == 1:
                live[0].future.set_result(self._timed(live[0].feeds, live[0].n))
                return
            feeds = {
                name: np.concatenate([item.feeds[name] for item in live]) if name in self._batched else array
                for name, array in live[0].feeds.items()
            }
            out = self._timed(feeds, sum(item.n for item in live))
        except Exception as exc:  # every request of the batch gets the error; the thread goes on
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in live:
            item.future.set_result(out[start : start + item.n])
            start += item.n

    def _timed(self, feeds: Feeds, n: int) -> np.ndarray:
        start = time.perf_counter()
        out = self._run(feeds)
        took = time.perf_counter() - start
        self._per_sample_s += 0.1 * (took / n - self._per_sample_s)
        if self._on_batch is not None:
            self._on_batch(n, took)
        return out
