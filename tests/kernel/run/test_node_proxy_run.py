"""`node-proxy run` on the real kernel: Services come and go, the API server fails, the proxy dies.

For each mode (iptables, nftables; ipvs where the kernel has it) one node-proxy process
runs in the node namespace of the test topology, watching an embedded API server.
Everything is judged by real traffic from the client namespace to the pods, and by
what the process serves on its health and metrics ports.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

from kubenet.model import Protocol
from kubenet.render import ProxyMode
from kubenet.testing.netns import Outcome
from kubenet.testing.podserver import parse_reply
from tests.kernel.run.conftest import HEALTHZ, METRICS, NODE_IPS, Stack, http_get, node_object
from tests.node.support import endpoint_slice, service, wait_for
from tests.scenarios import TCP_TARGET, TOPOLOGY, UDP_TARGET

pytestmark = pytest.mark.kernel

A, B, C = (TOPOLOGY[p]["ipv4"] for p in ("pod-a", "pod-b", "pod-c"))
REMOTE = TOPOLOGY["pod-r"]["ipv4"]
CLIENT = TOPOLOGY["client"]["ipv4"]
#: The spec's bound for a change to reach the kernel.
WITHIN = 2.0


def _slice(name: str, *ips: str, **kwargs: object) -> dict[str, object]:
    nodes = {ip: ("node-b" if ip == REMOTE else "node-a") for ip in ips}
    obj = endpoint_slice(name, ips, port=TCP_TARGET, **kwargs)  # type: ignore[arg-type]
    for ep in obj["endpoints"]:  # type: ignore[attr-defined]
        ep["nodeName"] = nodes[ep["addresses"][0]]
    return obj


def test_services_come_scale_and_go(stack: Stack) -> None:
    objects = stack.api.objects
    vip = "10.96.1.10"
    start = time.monotonic()
    objects.apply(service("web", vip), _slice("web", A))
    took = wait_for(lambda: stack.reachable_pods(vip, tries=1) == {"pod-a"}, 5, step=0.02)
    assert took <= WITHIN, f"reachable only after {took:.2f}s"
    assert stack.reachable_pods(vip) == {"pod-a"}

    objects.apply(_slice("web", A, B, C))
    wait_for(lambda: stack.reachable_pods(vip, tries=30) == {"pod-a", "pod-b", "pod-c"}, WITHIN)
    objects.apply(_slice("web", C))
    wait_for(lambda: stack.reachable_pods(vip, tries=10) == {"pod-c"}, WITHIN)

    objects.delete_service("web")
    objects.delete_slice("web-abc")
    wait_for(lambda: "pod-c" not in stack.reachable_pods(vip, tries=3), WITHIN)
    assert stack.reachable_pods(vip, tries=3) <= {"timeout", "refused", "unreachable"}
    assert time.monotonic() - start < 20


@dataclass
class Stream:
    """A steady stream of new TCP connections from the client, counting failures."""

    stack: Stack
    vip: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Stream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            # 3 s: a refusal, a reset or a black hole fails the attempt, a slow answer
            # does not. (With 1 s this test once failed on a SYN retransmitted after a
            # second, caused by the pods' TIME_WAIT: see _POD_SYSCTLS in the topology.)
            attempt = self.stack.topology.client.request(Protocol.TCP, self.vip, 80, timeout=3.0)
            if attempt.outcome is Outcome.REPLY:
                self.ok += 1
            else:
                self.failures.append(f"{time.monotonic():.3f} {attempt.outcome.value}")
            time.sleep(0.01)


def _kernel_rules(stack: Stack) -> str:
    if stack.mode is ProxyMode.NFTABLES:
        return stack.topology.node.run(["nft", "list", "ruleset"]).stdout
    text = stack.topology.node.run(["iptables-save"]).stdout
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_an_api_server_outage_changes_nothing_and_a_lost_history_converges(stack: Stack) -> None:
    objects = stack.api.objects
    vip = "10.96.1.20"
    objects.apply(service("steady", vip), _slice("steady", A, B))
    wait_for(lambda: stack.reachable_pods(vip, tries=20) == {"pod-a", "pod-b"}, WITHIN)
    before_rv = objects.resource_version()
    with Stream(stack, vip) as stream:
        rules = _kernel_rules(stack)
        stack.api.stop()
        time.sleep(2.0)  # longer than the sync period's partial syncs, about one full sync
        assert _kernel_rules(stack) == rules, "rules changed while the API server was away"
        stack.proxy.check_alive()
        # The server comes back as one whose history was compacted: its objects are
        # there from its first answer (the Service now on pods a and c), its history
        # is short, and resource versions soon pass the ones node-proxy holds, so its
        # watches get 410 Gone and list again. (Coming back empty would be a cluster
        # whose Services were all deleted, which node-proxy must honour at once.)
        stack.api.start(
            history=3, holding=(node_object(), service("steady", vip), _slice("steady", A, C))
        )
        objects = stack.api.objects
        while objects.resource_version() <= before_rv + 10:
            objects.apply(service("churn", "10.96.1.21"), _slice("churn", A))
            objects.delete_service("churn")
            objects.delete_slice("churn-abc")
        wait_for(lambda: stack.reachable_pods(vip, tries=20) == {"pod-a", "pod-c"}, 15)
    assert stream.ok > 50 and stream.failures == [], stream.failures[:10]
    log = stack.proxy.log()
    assert "listing again" in log, log[-3000:]
    objects.delete_service("steady")


def test_a_killed_proxy_restarts_without_a_failed_connection(stack: Stack) -> None:
    objects = stack.api.objects
    vip = "10.96.1.30"
    objects.apply(service("alive", vip), _slice("alive", A, B))
    # Set-up, not the property under test (which is the restart): the test before this
    # one leaves an API server with a three-event history, so a watch may be listing
    # again just now.
    wait_for(lambda: stack.reachable_pods(vip, tries=20) == {"pod-a", "pod-b"}, 10)
    with Stream(stack, vip) as stream:
        time.sleep(0.5)
        stack.proxy.kill(signal.SIGKILL)
        time.sleep(1.0)
        stack.proxy.start(wait=False)
        stack.proxy.wait_synced()
        time.sleep(1.0)
    assert stream.ok > 50 and stream.failures == [], stream.failures[:10]
    assert stack.reachable_pods(vip, tries=20) == {"pod-a", "pod-b"}
    objects.delete_service("alive")


def test_a_udp_flow_follows_its_endpoint(stack: Stack) -> None:
    objects = stack.api.objects
    vip = "10.96.1.53"
    udp = {"port": 53, "target": UDP_TARGET, "protocol": "UDP"}
    objects.apply(service("dns", vip, **udp))  # type: ignore[arg-type]
    sock = stack.topology.client.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CLIENT, 40053))
    sock.connect((vip, 53))
    sock.settimeout(0.3)

    def answer() -> str | None:
        try:
            sock.send(b"query\n")
            return parse_reply(sock.recv(512)).pod
        except OSError:
            return None

    try:
        wait_for(lambda: answer() is None, WITHIN)
        # The first endpoint: the very same flow (source port) is answered.
        dns_slice = endpoint_slice("dns", [A], port=UDP_TARGET, protocol="UDP")
        objects.apply(dns_slice)
        took = wait_for(lambda: answer() == "pod-a", 5, step=0.05)
        assert took <= WITHIN
        assert {answer() for _ in range(5)} == {"pod-a"}
        # The endpoint is replaced while pod-a still answers: without deleting the
        # flow's conntrack entry, the datagrams would keep going to pod-a.
        objects.apply(endpoint_slice("dns", [B], port=UDP_TARGET, protocol="UDP"))
        took = wait_for(lambda: answer() == "pod-b", 5, step=0.05)
        assert took <= WITHIN
        assert {answer() for _ in range(5)} == {"pod-b"}
    finally:
        sock.close()
        objects.delete_service("dns")


def test_health_endpoints_and_metrics_answer_as_upstreams_do(stack: Stack) -> None:
    objects = stack.api.objects
    # healthz and livez: upstream's JSON and headers.
    healthz = stack.proxy.get(HEALTHZ, "/healthz")
    assert healthz.status == 200
    assert healthz.headers["content-type"] == "application/json"
    assert healthz.headers["x-content-type-options"] == "nosniff"
    body = healthz.json()
    assert list(body) == ["lastUpdated", "currentTime", "nodeEligible", "healthy", "status"]
    assert body["nodeEligible"] is True and body["healthy"] is True
    assert set(body["status"]) == {"IPv4", "IPv6"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["currentTime"])
    livez = stack.proxy.get(HEALTHZ, "/livez").json()
    assert "nodeEligible" not in livez and livez["healthy"] is True

    # A Local load balancer: its health-check node port, seen from the client.
    lb = service(
        "lb",
        "10.96.1.40",
        type_="LoadBalancer",
        node_port=30040,
        health_check_node_port=32040,
        external_policy="Local",
        lb_ips=["203.0.113.40"],
    )
    objects.apply(
        lb,
        _slice(
            "lb",
            A,
            REMOTE,
            annotations={"endpoints.kubernetes.io/last-change-trigger-time": _now()},
        ),
    )

    def health_check() -> tuple[int, dict[str, str], str] | None:
        try:
            got = http_get(stack.topology.client, NODE_IPS[0], 32040, "/")
        except OSError:
            return None
        return got.status, got.headers, got.body

    wait_for(lambda: (h := health_check()) is not None and h[0] == 200, WITHIN)
    _, headers, text = health_check()  # type: ignore[misc]
    assert text == (
        '{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "lb"\n\t},\n'
        '\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}'
    )
    assert headers["x-load-balancing-endpoint-weight"] == "1"
    assert headers["x-content-type-options"] == "nosniff"
    objects.apply(_slice("lb", REMOTE))
    wait_for(lambda: (h := health_check()) is not None and h[0] == 503, WITHIN)
    assert '"localEndpoints": 0' in health_check()[2]  # type: ignore[index]

    # /metrics: upstream's names, with the families and the mode's own counters.
    metrics = stack.proxy.get(METRICS, "/metrics").body
    for name in (
        'kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="0.001"}',
        'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"}',
        'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"}',
        'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}',
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        'kubeproxy_proxy_healthz_total{code="200"}',
        "process_resident_memory_bytes",
    ):
        assert name in metrics, name
    failures = {
        ProxyMode.IPTABLES: "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
        ProxyMode.NFTABLES: "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        ProxyMode.IPVS: "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
    }[stack.mode]
    assert f'{failures}{{ip_family="IPv4"}} 0.0' in metrics
    if stack.mode is ProxyMode.IPTABLES:
        assert "kubeproxy_sync_partial_proxy_rules_duration_seconds_count" in metrics
    assert "_created" not in metrics
    assert stack.proxy.get(METRICS, "/proxyMode").body == stack.mode.value
    # /rules: what the kernel has, our Service in it.
    rules = stack.proxy.get(METRICS, "/rules").body
    assert "10.96.1.40" in rules

    # A node marked for deletion fails /healthz, not /livez.
    doomed = node_object()
    doomed["spec"]["taints"] = [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]
    objects.apply(doomed)
    wait_for(lambda: stack.proxy.get(HEALTHZ, "/healthz").status == 503, WITHIN)
    assert stack.proxy.get(HEALTHZ, "/healthz").json()["nodeEligible"] is False
    assert stack.proxy.get(HEALTHZ, "/livez").status == 200
    objects.apply(node_object())
    wait_for(lambda: stack.proxy.get(HEALTHZ, "/healthz").status == 200, WITHIN)
    objects.delete_service("lb")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_dry_run_applies_nothing(stack: Stack) -> None:
    if stack.mode is not ProxyMode.NFTABLES:
        pytest.skip("one mode is enough to show the flag")
    stack.proxy.stop()
    from tests.kernel.run.conftest import NodeProxy, reset_kernel

    reset_kernel(stack.topology)
    dry = NodeProxy(
        stack.topology, stack.proxy.kubeconfig, stack.mode, stack.state, "--dry-run"
    ).start()
    try:
        stack.api.objects.apply(service("dry", "10.96.1.60"), _slice("dry", A))
        wait_for(lambda: "10.96.1.60" in dry.log(), WITHIN)
        assert "dry run" in dry.log()
        assert "kube-proxy" not in stack.topology.node.run(["nft", "list", "ruleset"]).stdout
    finally:
        dry.stop()
        stack.api.objects.delete_service("dry")
        stack.proxy.start()


def test_cleanup_leaves_nothing_behind(stack: Stack) -> None:
    objects = stack.api.objects
    objects.apply(
        service("left", "10.96.1.70", type_="NodePort", node_port=30070), _slice("left", A)
    )
    wait_for(lambda: stack.reachable_pods("10.96.1.70", tries=2) == {"pod-a"}, WITHIN)
    stack.proxy.stop()
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            stack.topology.node.name,
            sys.executable,
            "-m",
            "kubenet.cli.node_proxy",
            "run",
            "--cleanup",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    saved = stack.topology.node.run(["iptables-save"]).stdout
    saved += stack.topology.node.run(["ip6tables-save"]).stdout
    assert "KUBE-" not in saved
    assert "kube-proxy" not in stack.topology.node.run(["nft", "list", "ruleset"]).stdout
    assert stack.reachable_pods("10.96.1.70", tries=2) != {"pod-a"}
    objects.delete_service("left")
    stack.proxy.start()
