"""Profile a real bundle into its manifest, then plan from it: candidates, the chosen plan and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.planner import Network, candidates, cost_model, plan
from protos.bundle import Bundle
from split.cli import main
from split.profile import PROFILED_CODECS, profile_bundle


@pytest.fixture(scope="module")
def profiled(bundle: Bundle, digits, tmp_path_factory: pytest.TempPathFactory) -> Bundle:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("profiled") / "bundle"
    shutil.copytree(bundle.root, root)
    profile_bundle(Bundle.load(root), digits.x_cal, digits.y_cal, runs=5)
    return Bundle.load(root)


def test_profile_is_written_and_the_hash_still_matches(profiled: Bundle, bundle: Bundle) -> None:
    m = profiled.manifest
    assert m.content_hash == bundle.manifest.content_hash  # profiling does not change the model
    assert len(m.profile["segment_ms"]) == len(m.segments) and all(t > 0 for t in m.profile["segment_ms"])
    assert set(m.profile["exit_ms"]) == {e.name for e in m.exits}
    for sp in m.split_points[:-1]:
        assert sp.cost is not None and set(sp.cost["wire"]) == set(PROFILED_CODECS)
        wire = sp.cost["wire"]
        assert wire["int8"]["bytes"] <= 0.26 * wire["fp32"]["bytes"]
        assert set(sp.cost["cloud_ms"]) == {"fp32", "fp16", "int8", "int8c"}


def test_exit_rates_follow_the_runtime_rule(profiled: Bundle) -> None:
    m = profiled.manifest
    n = len(m.segments)
    assert m.split_point(0).cost["exit_rates"] == {}  # type: ignore[index]
    last = m.split_point(n).cost
    assert last is not None
    assert set(last["exit_rates"]) == {e.name for e in m.exits if e.after_segment + 1 < n}
    assert 0 < last["edge_exit_rate"] <= 1


def test_a_slow_link_plans_on_the_edge_and_a_fast_one_offloads_earlier(profiled: Bundle) -> None:
    costs = cost_model(profiled.manifest)
    slow = plan(costs, Network(1e5, 300.0))  # 100 kbit/s, 300 ms: nothing beats staying on the device
    assert slow.split == len(profiled.manifest.segments)
    fast = plan(costs, Network(1e10, 0.0))  # a link that costs nothing: the cloud's tail is as fast as the edge's
    assert fast.latency_ms <= slow.latency_ms
    listed = candidates(costs, Network(1e7, 20.0))
    assert len({(c.split, c.codec, c.exits) for c in listed}) == len(listed)


def test_unprofiled_bundle_says_what_to_run(bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="edgesplit profile --bundle"):
        cost_model(bundle.manifest)


def test_plan_cli_prints_every_candidate_and_marks_the_plan(profiled: Bundle, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    argv = ["plan", "--bundle", str(profiled.root), "--bandwidth", "1.1mbit", "--rtt", "150"]
    argv += ["--json", str(tmp_path / "p.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "network 1.1 Mbit/s, rtt 150 ms" in out and "\nplan: split " in out
    assert sum(line.startswith("*") for line in out.splitlines()) == 1
    assert (tmp_path / "p.json").is_file()


def test_plan_cli_refuses_a_bad_bandwidth(profiled: Bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["plan", "--bundle", str(profiled.root), "--bandwidth", "fast", "--rtt", "10"])
    assert "write e.g. 5.85mbit" in capsys.readouterr().err
