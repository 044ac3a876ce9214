"""The deployment, for real: Docker from Debian, images built on a debootstrap base, the compose stack up.

``docker/bootstrap.sh`` installs docker.io, docker-compose and debootstrap, starts dockerd and builds the base image
(skipped when it exists); this test then exports a bundle with ``edgesplit export``, profiles it for a device 600x
slower than this host, converts it with ``edgesplit export --format triton``, writes the digits test split as
``.npy``, builds the three images with ``--build-arg BASE_IMAGE=…``, brings up cloud, netsim and edge (and, in parallel,
profile ``triton``'s triton, netsim-triton and edge-triton), and checks that

- the client's accuracy equals the same bundle's in-process accuracy with the same settings;
- the offloads went through netsim: the edge shares no network with the cloud and dials netsim, its metrics count
  offloads, the cloud's count requests, and the client's offload latency follows netsim's profile;
- after netsim's profile changes from wifi to 3g through its HTTP API, the adaptive edges' plan changes: the
  one-shot one's over the test set, and the serving one's, named in its replies;
- the edge offloading to Triton answers as in-process too, through its own netsim, and Triton's own statistics
  count every offload (edgesplit cloud counts none of them).

Then it tears the stack down and stops the dockerd it started, by its PID. Needs root and Debian's mirror.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = str(REPO / "docker" / "bootstrap.sh")
DOCKER = "/usr/bin/docker"
PROJECT = "edgesplit-test"
BASE_IMAGE = "edgesplit-base:bookworm"
SLOWDOWN = "600"  # the emulated device: its full model takes ~45 ms, so wifi offloads and 3g stays on the device
SERVICES = ("cloud", "netsim", "edge")
TRITON_SERVICES = ("triton", "netsim-triton", "edge-triton")
MIN_RTT_MS = {"wifi": 20.0, "3g": 150.0}  # netsim's profiles


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _debian_reachable() -> str | None:
    """Why Debian's mirror cannot be used, or None."""
    try:
        mirror = _run([sys.executable, str(REPO / "docker" / "apt_mirror.py")], 30).stdout.strip()
        with urllib.request.urlopen(f"{mirror}/dists/bookworm/Release", timeout=15) as response:
            return None if response.status == 200 else f"{mirror} answered {response.status}"
    except (AssertionError, OSError) as exc:
        return f"no Debian mirror reachable: {exc}"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the container test installs docker.io and starts dockerd: run it as root")
    reason = _debian_reachable()
    if reason:
        pytest.skip(reason)
    _run([BOOTSTRAP, "install"], 900)
    _run([BOOTSTRAP, "start"], 120)
    try:
        yield
    finally:
        _run([BOOTSTRAP, "stop"], 120)


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    bundle: Path
    data: Path
    repo: Path

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        compose = ["docker-compose", "-p", PROJECT, "-f", str(REPO / "docker-compose.yml")]
        compose += ["--profile", "adapt", "--profile", "triton"]  # their services are ours to start and stop too
        return _run([*compose, *args], timeout, self.env)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.split()[0]

    def inspect(self, service: str, template: str) -> str:
        return _run([DOCKER, "inspect", "-f", template, self.container(service)], 30).stdout.strip()

    def ip(self, service: str) -> str:
        return self.inspect(service, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]


def _host_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "STATE": "/var/tmp/edgesplit-docker", "BASE_IMAGE": BASE_IMAGE}


def _prepare(root: Path) -> tuple[Path, Path, Path]:
    """The bundle (``edgesplit export``, then profiled), its Triton repository and the test set as ``.npy``."""
    bundle, data, repo, env = root / "bundle", root / "data", root / "triton", _host_env()
    cli = [sys.executable, "-m", "split.cli"]
    _run([*cli, "export", "--out", str(bundle), "--width", "0.25", "--epochs", "4", "--default-split", "2"], 900, env)
    _run([*cli, "profile", "--bundle", str(bundle), "--edge-slowdown", SLOWDOWN, "--runs", "5"], 300, env)
    _run([*cli, "export", "--format", "triton", "--from-bundle", str(bundle), "--out", str(repo)], 120, env)
    _run([sys.executable, str(REPO / "docker" / "testset.py"), "--out", str(data)], 120, env)
    return bundle, data, repo


def _wait_healthy(stack: Stack, services: tuple[str, ...], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = {s: stack.inspect(s, "{{.State.Health.Status}}") for s in services}
        if all(v == "healthy" for v in status.values()):
            return
        assert time.monotonic() < deadline, f"not healthy after {timeout_s:.0f} s: {status}"
        time.sleep(1)  # ok: polls Docker's health state, which has no event to wait on


@pytest.fixture(scope="module")
def stack(dockerd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _run([BOOTSTRAP, "base"], 900, _host_env())
    bundle, data, repo = _prepare(tmp_path_factory.mktemp("deploy"))
    for image in ("cloud", "edge", "triton"):
        dockerfile = str(REPO / "docker" / f"{image}.Dockerfile")
        _run([DOCKER, "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-f", dockerfile,
              "-t", f"edgesplit-{image}", str(REPO)], 900)  # fmt: skip
    env = {**os.environ, "EDGESPLIT_BUNDLE_DIR": str(bundle), "EDGESPLIT_DATA_DIR": str(data),
           "EDGESPLIT_TRITON_REPO_DIR": str(repo), "EDGESPLIT_PROFILE": "wifi",
           "EDGESPLIT_SLOWDOWN": SLOWDOWN}  # fmt: skip
    deployed = Stack(env, bundle, data, repo)
    deployed.compose("down", "-v", "--remove-orphans", timeout=120)  # a run that was killed may have left it
    try:
        deployed.compose("up", "-d", "--no-build", *SERVICES, *TRITON_SERVICES)  # Triton loads while cloud starts
        _wait_healthy(deployed, SERVICES + TRITON_SERVICES)
        yield deployed
    finally:
        deployed.compose("down", "-v", "--remove-orphans", timeout=120)


def _client(stack: Stack, *args: str) -> dict:
    out = stack.compose("run", "--rm", "-T", "client", *args).stdout
    print(out)
    lines = [line for line in out.splitlines() if line.startswith("client: result ")]
    assert lines, out
    return json.loads(lines[-1].removeprefix("client: result "))


def _adapt(stack: Stack) -> dict:
    out = stack.compose("run", "--rm", "-T", "adapt").stdout
    return json.loads(out[out.index("{") :])["adaptation"]


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    rows = [line for line in text.splitlines() if line.startswith(name + "{") and all(w in line for w in want)]
    return sum(float(row.rsplit(" ", 1)[1]) for row in rows)


def _scrape(ip: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _in_process_correct(bundle_dir: Path, x: np.ndarray, y: np.ndarray) -> int:
    """Correct answers of the same bundle and settings (default split, codec, thresholds, deadline) in-process."""
    from cloud.server import CloudConfig, CloudServer
    from edge.client import CloudClient
    from edge.evaluate import evaluate
    from edge.runtime import EdgeRuntime
    from protos.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    server = CloudServer(CloudConfig(bundles=(str(bundle_dir),), port=0, threads=1))
    port = server.start()
    client = CloudClient(f"127.0.0.1:{port}", model=bundle.manifest.model, bundle_hash=bundle.manifest.content_hash)
    try:
        client.wait_ready(10)
        _, answers = evaluate(EdgeRuntime(bundle, cloud=client), x, y)
    finally:
        client.close()
        server.stop(grace=1.0)
    return sum(a.label == int(t) for a, t in zip(answers, y, strict=True))


def test_the_stack_answers_as_in_process_through_netsim_and_adapts(stack: Stack) -> None:
    x, y = np.load(stack.data / "x_test.npy"), np.load(stack.data / "y_test.npy")
    result = _client(stack)
    assert result["n"] == len(y) and not result["degraded"], result
    assert result["correct"] == _in_process_correct(stack.bundle, x, y), result
    assert result["sources"].get("cloud", 0) > 0 and result["latency_ms"]["cloud"]["p50"] >= MIN_RTT_MS["wifi"]

    # The edge dials netsim and cannot reach the cloud itself: they share no network.
    networks = {s: set(json.loads(stack.inspect(s, "{{json .NetworkSettings.Networks}}"))) for s in SERVICES}
    assert not networks["edge"] & networks["cloud"] and networks["netsim"] >= networks["edge"] | networks["cloud"]
    assert "--cloud netsim:9001" in stack.compose("logs", "--no-color", "edge").stdout
    offloads = _metric(_scrape(stack.ip("edge"), 9100), "edgesplit_edge_offload_attempts_total")
    served = _metric(_scrape(stack.ip("cloud"), 9101), "edgesplit_cloud_requests_total", method="ModelInfer", code="OK")
    assert offloads >= result["sources"]["cloud"] and served == offloads

    # The adaptive edges on wifi keep offloading; after netsim's profile turns to 3g they move to the device: the
    # one-shot one over the test set, and the serving one, which says so in its replies to the client.
    n = len(json.loads((stack.bundle / "manifest.json").read_text())["segments"])
    stack.compose("up", "-d", "--no-build", "edge-adaptive")
    _wait_healthy(stack, ("edge-adaptive",))
    serve = ("--edge", "edge-adaptive:8000", "--limit", "60", "--warmup", "0")  # every reply counted, and its plan
    wifi, serving_wifi = _adapt(stack), _client(stack, *serve)
    assert wifi["split"] < n, wifi
    on_wifi = serving_wifi["plans"][-1][1]
    assert not on_wifi.startswith(f"split {n},") and serving_wifi["sources"].get("cloud", 0) > 0, serving_wifi
    env = {**_host_env(), "EDGESPLIT_NETSIM_API": f"http://{stack.ip('netsim')}:8474"}
    _run([sys.executable, str(REPO / "docker" / "launch.py"), "set-profile", "3g"], 60, env)
    slow, serving_slow = _adapt(stack), _client(stack, *serve)
    print(f"adaptive edge: wifi {wifi}\n3g {slow}\nserving: wifi {serving_wifi['plans']}, 3g {serving_slow['plans']}")
    assert slow["split"] == n and slow["plan"] != wifi["plan"], slow
    assert slow["switches"], slow
    # it re-planned while serving: the first replies on 3g carry the wifi plan, the later ones the device's
    assert serving_slow["plans"][0][1] == on_wifi and serving_slow["plans"][-1][1].startswith(f"split {n},")
    # And the serving edge's offloads now take 3g's round trip: they do go through netsim.
    assert _client(stack, "--limit", "20")["latency_ms"]["cloud"]["p50"] >= MIN_RTT_MS["3g"]


def _triton_served(ip: str) -> dict[str, int]:
    """Successful inference requests per model, from Triton's own statistics (HTTP ``/v2/models/stats``)."""
    with urllib.request.urlopen(f"http://{ip}:8000/v2/models/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"]
    counts = {m["name"]: int(m["inference_stats"]["success"]["count"]) for m in stats}
    return {name: count for name, count in counts.items() if count}


def test_the_edge_offloads_to_triton_through_netsim(stack: Stack) -> None:
    x, y = np.load(stack.data / "x_test.npy"), np.load(stack.data / "y_test.npy")
    cloud_before = _metric(_scrape(stack.ip("cloud"), 9101), "edgesplit_cloud_requests_total", method="ModelInfer")
    result = _client(stack, "--edge", "edge-triton:8000")
    assert result["n"] == len(y) and not result["degraded"], result  # nothing refused: the repository is this bundle's
    assert result["correct"] == _in_process_correct(stack.bundle, x, y), result
    assert result["sources"].get("cloud", 0) > 0 and result["latency_ms"]["cloud"]["p50"] >= MIN_RTT_MS["wifi"]

    # Through its own netsim, to Triton only: Triton's statistics count every offload, edgesplit cloud none.
    networks = {s: set(json.loads(stack.inspect(s, "{{json .NetworkSettings.Networks}}"))) for s in TRITON_SERVICES}
    assert not networks["edge-triton"] & networks["triton"]
    assert (
        "--cloud netsim-triton:9001 --deadline-ms 1000 --cloud-engine triton"
        in stack.compose("logs", "--no-color", "edge-triton").stdout
    )
    offloads = _metric(_scrape(stack.ip("edge-triton"), 9100), "edgesplit_edge_offload_attempts_total")
    served = _triton_served(stack.ip("triton"))
    print(f"edge-triton: {result['sources']}, {offloads:.0f} offloads; Triton served {served}")
    assert offloads >= result["sources"]["cloud"] and sum(served.values()) == offloads, (offloads, served)
    split = json.loads((stack.bundle / "manifest.json").read_text())["default_split"]
    assert all(f"_s{split}_" in name for name in served), served
    cloud_after = _metric(_scrape(stack.ip("cloud"), 9101), "edgesplit_cloud_requests_total", method="ModelInfer")
    assert cloud_after == cloud_before
