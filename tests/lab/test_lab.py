"""The lab end to end, as a person drives it: up, curl, scale, trace, down, crash.

Each test runs ``python -m kubenet.lab`` (the app ``node-proxy lab`` mounts) as a
separate process per command, with the lab's folder in a temporary directory, and
judges by real HTTP answers from the pods and by what is left on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenet.lab.state import LabState, load
from kubenet.lab.teardown import is_running, namespaces_present, program_of
from kubenet.testing.netns import missing_kernel_support

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def lab_kernel() -> None:
    missing = missing_kernel_support(iptables=True, nftables=True)
    if missing:
        pytest.skip(missing)


class Lab:
    """The lab's commands, run the way a person runs them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "KUBENET_LAB_DIR": str(folder)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "kubenet.lab", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"lab {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done

    def state(self) -> LabState:
        state = load(self.folder)
        assert state is not None
        return state

    def who_answers(self, service: str, count: int = 20) -> dict[str, int]:
        out = self.run("curl", service, "--count", str(count), "--timeout", "1").stdout
        lines = out.splitlines()[1:]
        return {who: int(n) for who, n in (line.split() for line in lines)}

    def wait_answers(self, service: str, pods: set[str], timeout: float = 5.0) -> None:
        """Until exactly ``pods`` answer (node-proxy syncs within a second or so)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            seen = self.who_answers(service)
            if set(seen) == pods:
                return
            time.sleep(0.2)
        raise AssertionError(f"{service}: want {sorted(pods)}, last saw {seen}")


def assert_nothing_left(state: LabState, folder: Path) -> None:
    assert not set(state.namespaces.values()) & namespaces_present()
    assert not is_running(state.supervisor_pid, "kubenet.lab.supervisor")
    for name, pid in state.pids.items():
        assert not is_running(pid, program_of(name)), f"{name} (pid {pid}) still runs"
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())


@pytest.fixture
def lab(lab_kernel: None, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.run("down", check=False)


def test_up_curl_scale_trace_down(lab: Lab) -> None:
    start = time.monotonic()
    up = lab.run("up", "--proxy-mode", "iptables")
    assert "The lab is up" in up.stdout and "lab curl web" in up.stdout
    state = lab.state()
    assert state.ready and set(state.namespaces) == {
        "node", "client", "pod-a", "pod-b", "pod-c", "pod-r",
    }  # fmt: skip

    one = lab.run("curl", "web").stdout
    assert "answered demo/web (10.96.0.10:80/tcp)" in one
    # The examples' web has pod-a, pod-b (node-a) and pod-r (node-b) behind it.
    lab.wait_answers("web", {"pod-a", "pod-b", "pod-r"}, timeout=10)

    assert lab.run("scale", "web", "1").stdout.strip() == "demo/web: served by pod-a"
    lab.wait_answers("web", {"pod-a"})
    lab.run("scale", "web", "4")
    lab.wait_answers("web", {"pod-a", "pod-b", "pod-c", "pod-r"})

    trace = json.loads(lab.run("trace", "web", "-o", "json").stdout)
    assert trace["verdict"] == "DNAT"
    assert sorted(trace["endpoints"]) == [
        "10.244.1.2:8080", "10.244.1.3:8080", "10.244.1.4:8080", "10.244.2.2:8080",
    ]  # fmt: skip
    assert trace["masquerade"] is True  # the client is outside the cluster CIDR

    lab.run("scale", "web", "0")
    deadline = time.monotonic() + 5
    while (refused := lab.run("curl", "web", check=False)).returncode == 0:
        assert time.monotonic() < deadline, refused.stdout
        time.sleep(0.2)
    assert "connection refused" in refused.stdout

    rules = lab.run("rules").stdout
    assert "KUBE-SERVICES" in rules

    down = lab.run("down").stdout
    assert "The lab is down." in down
    assert_nothing_left(state, lab.folder)
    assert lab.run("down").stdout.strip() == "No lab was up."
    assert time.monotonic() - start < 120


def test_down_cleans_up_after_the_supervisor_is_killed(lab: Lab) -> None:
    lab.run("up", "--proxy-mode", "nftables")
    lab.wait_answers("dns", {"pod-a", "pod-b"}, timeout=10)
    state = lab.state()
    os.kill(state.supervisor_pid, signal.SIGKILL)
    time.sleep(0.5)
    # node-proxy outlives its supervisor; the namespaces stay until someone cleans up.
    assert is_running(state.pids["node-proxy"], program_of("node-proxy"))
    assert set(state.namespaces.values()) <= namespaces_present()
    refused = lab.run("curl", "web", check=False)
    assert refused.returncode == 2 and "supervisor is gone" in refused.stderr

    lab.run("down")
    assert_nothing_left(state, lab.folder)


def test_down_stops_what_a_person_started_inside(lab: Lab) -> None:
    lab.run("up")
    state = lab.state()
    sleeper = subprocess.Popen(
        [sys.executable, "-m", "kubenet.lab", "exec", "--in", "client", "--", "sleep", "600"],
        env=lab.env,
    )
    time.sleep(0.5)
    assert sleeper.poll() is None
    down = lab.run("down").stdout
    assert "sleep 600" in down
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert_nothing_left(state, lab.folder)


def test_a_second_lab_is_refused_while_one_is_up(lab: Lab) -> None:
    lab.run("up")
    again = lab.run("up", check=False)
    assert again.returncode == 2 and "a lab is up already" in again.stderr


def test_session_affinity_keeps_a_client_on_one_pod(lab: Lab) -> None:
    lab.run("up")
    # sticky (ClientIP affinity) and web have the same two node-a pods behind them...
    seen = lab.who_answers("sticky", 12)
    assert len(seen) == 1 and sum(seen.values()) == 12
    # ...and from the same client, web spreads while sticky does not.
    lab.run("scale", "web", "2")
    lab.wait_answers("web", {"pod-a", "pod-b"}, timeout=10)
