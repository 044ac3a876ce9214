"""The dynamic batcher on a stand-in tail (a numpy function that records each batch): who shares a batch, bounds,
deadlines, errors, retirement. Batches are made deterministic by holding the first run until the rest queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from cloud.batcher import BatchConfig, Batcher
from cloud.errors import DeadlineExceeded, Overloaded


class Tail:
    """``y = 2 x + s`` per row; records batch sizes; the first run can be held until released."""

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


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait on a condition of the system under test (it has no event to wait on)."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.001)


def x_of(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 3), i, dtype=np.float32)


def submit_all(batcher: Batcher, feeds: list[dict[str, np.ndarray]], pool: ThreadPoolExecutor) -> list[Future]:
    return [pool.submit(batcher.infer, f, 10.0) for f in feeds]


def test_requests_queued_behind_a_running_batch_run_as_one_batch_and_each_gets_its_rows() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=32))
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(batcher.infer, {"x": x_of(100)}, 10.0)
        tail.started.wait(10)
        rest = submit_all(batcher, [{"x": x_of(i, n=1 + i % 3)} for i in range(10)], pool)
        wait_until(lambda: batcher.depth == sum(1 + i % 3 for i in range(10)))
        tail.release.set()
        results = [f.result() for f in rest]
    np.testing.assert_array_equal(first.result(), x_of(200))
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, x_of(2 * i, n=1 + i % 3))
    assert tail.batches == [1, sum(1 + i % 3 for i in range(10))]
    assert tail.threads == {"edgesplit-batcher"}


def test_a_batch_never_exceeds_max_batch_size_and_keeps_order() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=4))
    with ThreadPoolExecutor(16) as pool:
        pool.submit(batcher.infer, {"x": x_of(0)}, 10.0)
        tail.started.wait(10)
        futures = []
        for i in range(10):  # queued one by one, so the order is known
            futures.append(pool.submit(batcher.infer, {"x": x_of(i)}, 10.0))
            wait_until(lambda n=i + 1: batcher.depth == n)
        tail.release.set()
        outs = [f.result() for f in futures]
    assert tail.batches == [1, 4, 4, 2]
    assert [int(o[0, 0]) for o in outs] == [2 * i for i in range(10)]


def test_requests_with_different_unbatched_inputs_never_share_a_batch() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=32))
    scales = [np.float32(s) for s in (0.5, 0.25, 0.5, 0.25, 0.5)]
    with ThreadPoolExecutor(8) as pool:
        pool.submit(batcher.infer, {"x": x_of(0), "s": np.float32(0)}, 10.0)
        tail.started.wait(10)
        futures = submit_all(batcher, [{"x": x_of(i), "s": s} for i, s in enumerate(scales)], pool)
        wait_until(lambda: batcher.depth == 5)
        tail.release.set()
        outs = [f.result() for f in futures]
    assert sorted(tail.batches[1:]) == [2, 3]
    for i, (out, s) in enumerate(zip(outs, scales, strict=True)):
        np.testing.assert_array_equal(out, x_of(i) * 2 + s)


def test_a_full_queue_refuses_with_a_retry_hint_and_memory_stays_bounded() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=8, max_queue_size=4))
    with ThreadPoolExecutor(8) as pool:
        pool.submit(batcher.infer, {"x": x_of(0)}, 10.0)
        tail.started.wait(10)
        queued = submit_all(batcher, [{"x": x_of(i)} for i in range(4)], pool)
        wait_until(lambda: batcher.depth == 4)
        with pytest.raises(Overloaded) as refused:
            batcher.infer({"x": x_of(9)}, 10.0)
        assert refused.value.retry_after_ms >= 1
        assert "max_queue_size 4" in str(refused.value)
        assert batcher.depth == 4
        tail.release.set()
        assert [int(f.result()[0, 0]) for f in queued] == [0, 2, 4, 6]


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_from_the_batch() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=8))
    with ThreadPoolExecutor(4) as pool:
        pool.submit(batcher.infer, {"x": x_of(0)}, 10.0)
        tail.started.wait(10)
        kept = pool.submit(batcher.infer, {"x": x_of(1)}, 10.0)
        wait_until(lambda: batcher.depth == 1)
        with pytest.raises(DeadlineExceeded):
            batcher.infer({"x": x_of(2)}, 0.01)
        tail.release.set()
        np.testing.assert_array_equal(kept.result(), x_of(2))
    assert tail.batches == [1, 1]  # the expired request never ran


def test_the_queue_delay_gathers_requests_that_arrive_within_it() -> None:
    tail = Tail()
    batcher = Batcher(tail, ["x"], BatchConfig(max_batch_size=3, max_queue_delay_us=1_000_000))
    with ThreadPoolExecutor(4) as pool:
        futures = submit_all(batcher, [{"x": x_of(i)} for i in range(3)], pool)
        outs = [f.result() for f in futures]  # the third fills the batch: no waiting out the second
    assert tail.batches == [3]
    assert sorted(int(o[0, 0]) for o in outs) == [0, 2, 4]


def test_an_error_in_a_batch_reaches_each_of_its_requests_and_the_batcher_goes_on() -> None:
    calls = []

    def flaky(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        calls.append(len(feeds["x"]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return feeds["x"]

    batcher = Batcher(flaky, ["x"], BatchConfig())
    with pytest.raises(RuntimeError, match="boom"):
        batcher.infer({"x": x_of(1)}, 10.0)
    np.testing.assert_array_equal(batcher.infer({"x": x_of(2)}, 10.0), x_of(2))


def test_after_close_queued_requests_finish_and_new_ones_run_in_the_callers_thread() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig())
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.infer, {"x": x_of(1)}, 10.0)
        tail.started.wait(10)
        queued = pool.submit(batcher.infer, {"x": x_of(2)}, 10.0)
        wait_until(lambda: batcher.depth == 1)
        batcher.close()
        tail.release.set()
        np.testing.assert_array_equal(first.result(), x_of(2))
        np.testing.assert_array_equal(queued.result(), x_of(4))
    np.testing.assert_array_equal(batcher.infer({"x": x_of(3)}, 10.0), x_of(6))
    assert "MainThread" in tail.threads


def test_with_batching_off_each_request_runs_alone_in_its_own_thread_and_the_bound_holds() -> None:
    tail = Tail(hold_first=True)
    batcher = Batcher(tail, ["x"], BatchConfig(enabled=False, max_queue_size=2))
    with ThreadPoolExecutor(4) as pool:
        running = submit_all(batcher, [{"x": x_of(1)}, {"x": x_of(2)}], pool)
        wait_until(lambda: batcher.depth == 2)
        with pytest.raises(Overloaded):
            batcher.infer({"x": x_of(3)}, 10.0)
        tail.release.set()
        assert [int(f.result()[0, 0]) for f in running] == [2, 4]
    assert tail.batches == [1, 1]
    assert "edgesplit-batcher" not in tail.threads


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
