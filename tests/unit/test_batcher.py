"""The dynamic batcher on a stand-in tail (a numpy function that records each batch): who shares a batch, bounds,
deadlines, errors, retirement. Batches are made deterministic by holding the first run (in its worker thread)
until the rest have queued on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from cloud.batcher import BatchConfig, Batcher
from cloud.errors import DeadlineExceeded, Overloaded


class Tail:
    """``y = 2 x + s`` per row; records batch sizes and threads; the first run can be held until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        self.started.set()
        self.release.wait(10)
        self.batches.append(len(feeds["x"]))
        self.threads.add(threading.current_thread().name)
        return feeds["x"] * 2 + feeds.get("s", np.float32(0))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate`` holds (the queue's state changes only on the loop)."""
    while not predicate():
        await asyncio.sleep(0)


async def started(tail: Tail) -> None:
    await asyncio.to_thread(tail.started.wait, 10)


def x_of(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 3), i, dtype=np.float32)


POOL = ThreadPoolExecutor(2, thread_name_prefix="ort")


def batcher_for(tail: Callable[[Mapping[str, np.ndarray]], np.ndarray], **knobs: Any) -> Batcher:
    return Batcher(tail, ["x"], BatchConfig(**knobs), executor=POOL)


def test_requests_queued_behind_a_running_batch_run_as_one_batch_and_each_gets_its_rows() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=32)
    sizes = [1 + i % 3 for i in range(10)]

    async def test() -> None:
        first = asyncio.ensure_future(batcher.infer({"x": x_of(100)}))
        await started(tail)
        rest = [asyncio.ensure_future(batcher.infer({"x": x_of(i, n)})) for i, n in enumerate(sizes)]
        await until(lambda: batcher.depth == sum(sizes))
        tail.release.set()
        np.testing.assert_array_equal(await first, x_of(200))
        for i, (n, out) in enumerate(zip(sizes, await asyncio.gather(*rest), strict=True)):
            np.testing.assert_array_equal(out, x_of(2 * i, n))

    run(test)
    assert tail.batches == [1, sum(sizes)]
    assert all(name.startswith("ort") for name in tail.threads)


def test_a_batch_never_exceeds_max_batch_size_and_keeps_order() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=4)

    async def test() -> None:
        held = asyncio.ensure_future(batcher.infer({"x": x_of(0)}))
        await started(tail)
        futures = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in range(10)]
        await until(lambda: batcher.depth == 10)
        tail.release.set()
        await held
        assert [int(o[0, 0]) for o in await asyncio.gather(*futures)] == [2 * i for i in range(10)]

    run(test)
    assert tail.batches == [1, 4, 4, 2]


def test_requests_with_different_unbatched_inputs_never_share_a_batch() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=32)
    scales = [np.float32(s) for s in (0.5, 0.25, 0.5, 0.25, 0.5)]

    async def test() -> None:
        held = asyncio.ensure_future(batcher.infer({"x": x_of(0), "s": np.float32(0)}))
        await started(tail)
        futures = [asyncio.ensure_future(batcher.infer({"x": x_of(i), "s": s})) for i, s in enumerate(scales)]
        await until(lambda: batcher.depth == 5)
        tail.release.set()
        await held
        for i, (out, s) in enumerate(zip(await asyncio.gather(*futures), scales, strict=True)):
            np.testing.assert_array_equal(out, x_of(i) * 2 + s)

    run(test)
    assert sorted(tail.batches[1:]) == [2, 3]


def test_a_full_queue_refuses_with_a_retry_hint_and_memory_stays_bounded() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=8, max_queue_size=4)

    async def test() -> None:
        held = asyncio.ensure_future(batcher.infer({"x": x_of(0)}))
        await started(tail)
        queued = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in range(4)]
        await until(lambda: batcher.depth == 4)
        with pytest.raises(Overloaded) as refused:
            await batcher.infer({"x": x_of(9)})
        assert refused.value.retry_after_ms >= 1
        assert "max_queue_size 4" in str(refused.value)
        assert batcher.depth == 4
        tail.release.set()
        await held
        assert [int(o[0, 0]) for o in await asyncio.gather(*queued)] == [0, 2, 4, 6]

    run(test)


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_from_the_batch() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=8)

    async def test() -> None:
        held = asyncio.ensure_future(batcher.infer({"x": x_of(0)}))
        await started(tail)
        kept = asyncio.ensure_future(batcher.infer({"x": x_of(1)}))
        expired = asyncio.ensure_future(batcher.infer({"x": x_of(2)}, timeout=0.01))
        await until(lambda: batcher.depth == 2)
        await asyncio.sleep(0.02)  # its deadline passes while the held batch runs
        tail.release.set()
        with pytest.raises(DeadlineExceeded):
            await expired
        await held
        np.testing.assert_array_equal(await kept, x_of(2))

    run(test)
    assert tail.batches == [1, 1]  # the expired request never ran


def test_the_delay_counts_from_the_end_of_the_last_batch_so_answered_clients_rejoin() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, max_batch_size=4, max_queue_delay_us=1_000_000)

    async def test() -> None:
        first = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in range(4)]  # full: runs at once
        await started(tail)
        second = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in range(2)]
        await until(lambda: batcher.depth == 2)
        tail.release.set()
        await asyncio.gather(*first)
        again = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in range(2)]  # the answered rejoin
        await asyncio.gather(*second, *again)

    run(test)
    assert tail.batches == [4, 4]  # not [4, 2, 2]: the two that waited during the run were joined by two more


def test_the_queue_delay_gathers_requests_and_a_full_batch_does_not_wait_it_out() -> None:
    tail = Tail()
    batcher = batcher_for(tail, max_batch_size=3, max_queue_delay_us=1_000_000)

    async def test() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        outs = await asyncio.gather(*(batcher.infer({"x": x_of(i)}) for i in range(3)))
        assert loop.time() - start < 0.9  # the third filled the batch
        assert sorted(int(o[0, 0]) for o in outs) == [0, 2, 4]

    run(test)
    assert tail.batches == [3]


def test_an_error_in_a_batch_reaches_each_of_its_requests_and_the_batcher_goes_on() -> None:
    calls: list[int] = []

    def flaky(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        calls.append(len(feeds["x"]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return feeds["x"]

    batcher = batcher_for(flaky)

    async def test() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.infer({"x": x_of(1)})
        np.testing.assert_array_equal(await batcher.infer({"x": x_of(2)}), x_of(2))

    run(test)


def test_after_close_queued_requests_finish_and_new_ones_run_alone() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail)

    async def test() -> None:
        first = asyncio.ensure_future(batcher.infer({"x": x_of(1)}))
        await started(tail)
        queued = asyncio.ensure_future(batcher.infer({"x": x_of(2)}))
        await until(lambda: batcher.depth == 1)
        batcher.close()
        tail.release.set()
        np.testing.assert_array_equal(await first, x_of(2))
        np.testing.assert_array_equal(await queued, x_of(4))
        np.testing.assert_array_equal(await batcher.infer({"x": x_of(3)}), x_of(6))

    run(test)
    assert tail.batches == [1, 1, 1]


def test_with_batching_off_requests_run_at_once_and_the_bound_holds() -> None:
    tail = Tail(hold_first=True)
    batcher = batcher_for(tail, enabled=False, max_queue_size=2)

    async def test() -> None:
        running = [asyncio.ensure_future(batcher.infer({"x": x_of(i)})) for i in (1, 2)]
        await until(lambda: batcher.depth == 2)
        with pytest.raises(Overloaded):
            await batcher.infer({"x": x_of(3)})
        tail.release.set()
        assert [int(o[0, 0]) for o in await asyncio.gather(*running)] == [2, 4]

    run(test)
    assert tail.batches == [1, 1]


def test_a_batcher_moves_to_a_new_event_loop_once_the_old_one_left_no_work() -> None:
    batcher = batcher_for(Tail())
    for i in range(2):  # two servers, one after the other, sharing one loaded model

        async def test(i: int = i) -> None:
            np.testing.assert_array_equal(await batcher.infer({"x": x_of(i)}), x_of(2 * i))

        run(test)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be in 1..4096"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us must be in 0..1000000"),
        ({"max_queue_size": 0}, "max_queue_size must be >= 1"),
    ],
)
def test_bad_knobs_are_refused_with_the_valid_range(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchConfig(**kwargs)
