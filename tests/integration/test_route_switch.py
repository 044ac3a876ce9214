"""Switching split point, codec and exits while requests are running: no restart, no request dropped, and every
answer is the full model's where the cloud answered."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge.client import CloudClient
from edge.runtime import EdgeRuntime
from protos.bundle import Bundle


@pytest.fixture()
def runtime(bundle: Bundle, cloud: str) -> EdgeRuntime:
    client = CloudClient(cloud, model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    client.wait_ready()
    yield EdgeRuntime(bundle, cloud=client)  # type: ignore[misc]
    client.close()


def test_switching_under_load_drops_nothing(runtime: EdgeRuntime, bundle: Bundle, digits) -> None:  # type: ignore[no-untyped-def]
    n = len(bundle.manifest.segments)
    reference = EdgeRuntime(bundle, split=n, exits=False)
    expected = [reference.infer(x).label for x in digits.x_test[:60]]
    routes = itertools.cycle([(0, "fp32", False), (2, "int8+zstd", True), (n, "fp32", True), (1, "fp16", False)])
    stop = threading.Event()
    switched = 0

    def switcher() -> None:
        nonlocal switched
        while not stop.is_set():
            runtime.set_route(*next(routes))
            switched += 1

    thread = threading.Thread(target=switcher)
    thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(runtime.infer, digits.x_test[:60]))
    finally:
        stop.set()
        thread.join()
    assert switched > 4 and len(answers) == 60
    sources = {a.source for a in answers}
    assert "cloud" in sources and sources <= {"cloud", "exit", "edge"}
    exact = [i for i, a in enumerate(answers) if a.source == "edge" or a.codec == "fp32"]
    assert exact  # fp32 offloads and edge-only answers are the full model's, whatever route came before
    assert all(answers[i].label == expected[i] for i in exact)


def test_route_is_exposed_and_a_bad_one_is_refused_without_changing_it(runtime: EdgeRuntime) -> None:
    runtime.set_route(2, "int8", True)
    assert (runtime.route.split, runtime.route.codec.name, runtime.route.exits) == (2, "int8", True)
    with pytest.raises(ValueError, match="unknown split point 9"):
        runtime.set_route(9, "fp32", True)
    with pytest.raises(ValueError, match="valid codecs"):
        runtime.set_route(1, "int3", True)
    assert (runtime.route.split, runtime.route.codec.name, runtime.route.exits) == (2, "int8", True)
