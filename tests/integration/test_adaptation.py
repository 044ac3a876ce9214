"""Run-time adaptation through a real network: a real cloud behind netsim, the link degraded mid-run.

The cost model is the bundle's real profile with the edge's compute scaled up, as for a device slower than this
host (the runtime itself runs at host speed: what is tested is that the edge *sees* the network change through
its own traffic, re-plans, and switches route without losing a request).
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from edge.adapt import AdaptiveEdge
from edge.client import CloudClient
from edge.planner import CostModel, Network, cost_model, plan
from edge.runtime import EdgeRuntime
from netsim import NetSim
from netsim.profiles import Profile
from protos.bundle import Bundle
from split.profile import profile_bundle

FAST = Profile(bandwidth_mbit=100, rtt_ms=2, name="fast")
SLOW = Profile(bandwidth_mbit=1, rtt_ms=80, name="slow")
EDGE_MS = 20.0  # the emulated device's full-model time


def _network(p: Profile) -> Network:
    return Network(p.bandwidth_mbit * 1e6, p.rtt_ms)


@pytest.fixture(scope="module")
def costs(bundle: Bundle, digits, tmp_path_factory: pytest.TempPathFactory) -> CostModel:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("adapt") / "bundle"
    shutil.copytree(bundle.root, root)
    profile_bundle(Bundle.load(root), digits.x_cal, digits.y_cal, runs=5, codecs=("fp32", "int8"))
    measured = cost_model(Bundle.load(root).manifest)
    k = EDGE_MS / sum(measured.segment_ms)
    return dataclasses.replace(
        measured,
        segment_ms=[t * k for t in measured.segment_ms],
        exits=[dataclasses.replace(e, ms=e.ms * k) for e in measured.exits],
    )


def test_the_plans_differ_between_the_two_links(costs: CostModel, bundle: Bundle) -> None:
    n = len(bundle.manifest.segments)
    assert plan(costs, _network(FAST)).split < n  # a fast link: offload
    assert plan(costs, _network(SLOW)).split == n  # a slow one: stay on the device


def test_the_edge_switches_when_the_link_drops_and_answers_every_request(  # type: ignore[no-untyped-def]
    costs: CostModel, bundle: Bundle, cloud: str, digits
) -> None:
    n, drop_at, total = len(bundle.manifest.segments), 30, 90
    with NetSim() as sim:
        listen = sim.create_proxy("cloud", cloud)
        sim.apply_profile("cloud", FAST)
        m = bundle.manifest
        client = CloudClient(listen, model=m.model, bundle_hash=m.content_hash, timeout_s=10)
        client.wait_ready()
        edge = AdaptiveEdge(EdgeRuntime(bundle, cloud=client), client, costs, _network(FAST), probe_every=5)
        assert edge.split < n
        answers = []
        for i in range(total):
            if i == drop_at:
                edge.wait_probes(timeout=10)
                at_drop = edge.status()["plan"]  # it may have switched codec on the fast link already
                sim.apply_profile("cloud", SLOW)
            answers.append(edge.infer(digits.x_test[i % len(digits.x_test)]))
        edge.wait_probes(timeout=10)
        client.close()
    assert len(answers) == total and all(a.degraded is None for a in answers)  # none fell back
    after = [s for s in edge.switches if s.request >= drop_at]  # a probe may finish during request drop_at
    assert after, f"no switch after the drop; status {edge.status()}"
    assert after[0].request - drop_at <= 50
    assert after[0].before == at_drop
    # On the device now: all of it, or all but the few samples no exit takes (a near-equal plan on this link)
    assert edge.plan.offload_rate <= 0.5
    later = answers[after[0].request + 1 :]
    assert sum(a.source == "cloud" for a in later) <= 0.5 * len(later)
    status = edge.status()
    assert status["estimate"]["rtt_ms"] > 2 * FAST.rtt_ms
    assert status["switches"][-1]["to"] == edge.plan.label


def test_the_serving_edge_re_plans_and_says_so_in_each_reply(  # type: ignore[no-untyped-def]
    costs: CostModel, bundle: Bundle, cloud: str, digits
) -> None:
    import grpc

    from edge.server import PLAN, EdgeServer
    from protos import inference_pb2 as pb
    from protos.inference_pb2_grpc import GRPCInferenceServiceStub
    from protos.tensors import add_input, get_param

    m = bundle.manifest
    with NetSim() as sim:
        listen = sim.create_proxy("cloud", cloud)
        sim.apply_profile("cloud", FAST)
        client = CloudClient(listen, model=m.model, bundle_hash=m.content_hash, timeout_s=10)
        client.wait_ready()
        adaptive = AdaptiveEdge(EdgeRuntime(bundle, cloud=client), client, costs, _network(FAST), probe_every=5)
        server = EdgeServer(adaptive.runtime, "127.0.0.1:0", adaptive=adaptive)
        port = server.start()
        plans = []
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = GRPCInferenceServiceStub(channel)
                for i in range(90):
                    if i == 30:
                        adaptive.wait_probes(timeout=10)
                        sim.apply_profile("cloud", SLOW)
                    request = pb.ModelInferRequest(model_name=m.model)
                    add_input(request, m.input.name, digits.x_test[i : i + 1].astype("float32"))
                    plans.append(get_param(stub.ModelInfer(request, timeout=30).parameters, PLAN))
        finally:
            server.stop(grace=1.0)
            adaptive.wait_probes(timeout=10)
            client.close()
    assert len(plans) == 90 and all(plans)
    assert plans[-1] != plans[29], f"the serving edge kept its plan {plans[-1]} after the link dropped"
    assert plans[-1] == adaptive.plan.label and adaptive.plan.offload_rate <= 0.5
