"""Real packets through real rules: every scenario case, on iptables and nftables.

For each backend the scenario's ServiceMap is rendered, applied in the node namespace,
and each case is sent as real traffic from the namespace that owns its source
address. What the kernel did is read off the answers of the pod servers (which pod,
on which address and port, seeing which source), or off how the attempt failed:

* DNAT: every attempt answered; over repeated connections the set of endpoints that
  answered is exactly the expected set (one endpoint of it, with ClientIP affinity);
  the pod saw a node address when masqueraded, the client's own address otherwise.
* REJECT: refused at once (ICMP error or RST within a second).
* DROP: no answer within the timeout.
* ACCEPT: the packet reached its original destination untouched.

Traffic to a node address always finds a server there too, so a REJECT or a missing
DNAT cannot hide behind the "connection refused" of a closed port.

The same observations are then compared with the packet tracer's answer for the same
plan: where the two disagree, the renderer or the tracer has a bug.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

import pytest

from kubenet.model import Endpoint, IPFamily, Protocol, ServiceMap, ServicePort
from kubenet.options import RenderOptions
from kubenet.render import ProxyMode
from kubenet.testing.netns import Attempt, Outcome, Topology
from kubenet.trace import Packet, Verdict
from tests.kernel.conftest import MODES, Kernel, require_module
from tests.scenarios import (
    BASE_OPTIONS,
    CLIENT,
    NODE_IP,
    POD_C,
    SCENARIOS,
    TCP_TARGET,
    TOPOLOGY,
    UDP_TARGET,
    Case,
    Scenario,
    ep,
    svc,
)

pytestmark = pytest.mark.kernel

#: Connection attempts for a case that answers: enough that missing one of three
#: equally likely endpoints by chance is about one in 60 000 (3 * (2/3)**30).
REPLY_ATTEMPTS = 30
#: Attempts for a case that is refused or dropped: a second look, not a sample.
FAILURE_ATTEMPTS = 2
#: How long a dropped packet is waited for; a REJECT must beat it by far.
DROP_TIMEOUT = 0.6
REJECT_WITHIN = 1.0


def _sctp_missing() -> str | None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError as exc:
        return f"this kernel has no SCTP sockets ({exc.strerror})"
    return "the harness has no SCTP client or server"


@dataclass(frozen=True)
class Observed:
    """Every attempt of one case, and how long the first one took."""

    attempts: tuple[Attempt, ...]
    first_seconds: float

    @property
    def outcomes(self) -> frozenset[Outcome]:
        return frozenset(a.outcome for a in self.attempts)

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(a.reply.endpoint for a in self.attempts if a.reply)

    @property
    def pods(self) -> frozenset[str]:
        return frozenset(a.reply.pod for a in self.attempts if a.reply)

    @property
    def peers(self) -> frozenset[str]:
        return frozenset(a.reply.peer for a in self.attempts if a.reply)

    def __str__(self) -> str:
        counts = {o.value: sum(a.outcome is o for a in self.attempts) for o in self.outcomes}
        text = f"kernel: {counts} (first after {self.first_seconds:.2f}s)"
        if self.endpoints:
            text += f", reached {sorted(self.endpoints)} of {sorted(self.pods)}"
            text += f", source seen as {sorted(self.peers)}"
        return text


def observe(topology: Topology, packet: Packet) -> Observed:
    """Send the case's packet as real traffic, repeatedly, and record what happened."""
    if packet.protocol is Protocol.SCTP:
        pytest.skip(_sctp_missing() or "no SCTP")
    node_owned = packet.dst in topology.spec.node_ips

    def attempt(timeout: float) -> Attempt:
        return topology.request(
            packet.protocol, packet.src, packet.dst, packet.dport, timeout=timeout
        )

    with ExitStack() as stack:
        if node_owned:
            stack.enter_context(topology.server(topology.node, "node", [packet.dport]))
        start = time.monotonic()
        first = attempt(DROP_TIMEOUT)
        took = time.monotonic() - start
        more = REPLY_ATTEMPTS if first.outcome is Outcome.REPLY else FAILURE_ATTEMPTS
        rest = [attempt(DROP_TIMEOUT) for _ in range(more - 1)]
    return Observed((first, *rest), took)


def target_port(
    service_map: ServiceMap, packet: Packet, node_ips: tuple[str, ...]
) -> ServicePort | None:
    """The service port a packet is addressed to, if any (for affinity)."""
    for port in service_map:
        if port.protocol is not packet.protocol:
            continue
        frontends = (
            *port.cluster_ips,
            *port.external_ips,
            *(i.ip for i in port.load_balancer_ingress),
        )
        if packet.dport == port.port and packet.dst in frontends:
            return port
        if port.node_port == packet.dport and packet.dst in node_ips:
            return port
    return None


def _is_node_source(src: str, topology: Topology) -> bool:
    return src in topology.spec.node_ips or ipaddress.ip_address(src).is_loopback


def mismatch(
    observed: Observed,
    *,
    verdict: Verdict,
    endpoints: tuple[str, ...],
    masquerade: bool,
    packet: Packet,
    sticky: bool,
    topology: Topology,
) -> str | None:
    """Why the observation contradicts the expected outcome, or None when it matches."""
    want = f"want {verdict.value} {list(endpoints)} masquerade={masquerade}"
    why: str | None = None
    if verdict is Verdict.DNAT:
        if observed.outcomes != {Outcome.REPLY}:
            why = "not every attempt was answered"
        elif sticky and not (len(observed.endpoints) == 1 and observed.endpoints <= set(endpoints)):
            why = "ClientIP affinity should keep the client on one expected endpoint"
        elif not sticky and observed.endpoints != set(endpoints):
            why = "the endpoints that answered are not the expected ones"
        elif not _is_node_source(packet.src, topology):
            # A node-originated packet carries a node address either way.
            seen_as = {packet.src} if not masquerade else set(topology.spec.node_ips)
            if not observed.peers <= seen_as:
                why = "masqueraded" if not masquerade else "not masqueraded to a node address"
    elif verdict is Verdict.REJECT:
        if not observed.outcomes <= {Outcome.REFUSED, Outcome.UNREACHABLE}:
            why = "not refused"
        elif observed.first_seconds > REJECT_WITHIN:
            why = "refused, but not at once"
    elif verdict is Verdict.DROP:
        if observed.outcomes != {Outcome.TIMEOUT}:
            why = "not dropped"
    elif verdict is Verdict.ACCEPT:
        owner = "node" if packet.dst in topology.spec.node_ips else topology.pod_of(packet.dst)
        dst = ipaddress.ip_address(packet.dst)
        direct = f"[{dst}]:{packet.dport}" if dst.version == 6 else f"{dst}:{packet.dport}"
        if observed.outcomes != {Outcome.REPLY} or observed.pods != {owner}:
            why = f"did not reach its original destination ({owner})"
        elif observed.endpoints != {direct} or observed.peers != {packet.src}:
            why = "reached its destination, but translated"
    return None if why is None else f"{why}: {want}; {observed}"


@dataclass(frozen=True)
class Run:
    """One case of one scenario on one backend."""

    mode: ProxyMode
    scenario: Scenario
    case: Case

    @property
    def id(self) -> str:
        return f"{self.mode.value}-{self.scenario.name}: {self.case.name}"


RUNS = [Run(mode, s, c) for mode in MODES for s in SCENARIOS for c in s.cases]


@pytest.fixture(scope="module")
def observations() -> dict[str, Observed]:
    """What the kernel did per run, shared by the expectation and the tracer checks."""
    return {}


def _observe_run(kernel: Kernel, run: Run, observations: dict[str, Observed]) -> Observed:
    kernel.load(run.mode, run.scenario.service_map, run.scenario.options)
    if run.id not in observations:
        observations[run.id] = observe(kernel.topology, run.case.packet)
    return observations[run.id]


def _sticky(run: Run, kernel: Kernel) -> bool:
    port = target_port(run.scenario.service_map, run.case.packet, kernel.topology.spec.node_ips)
    return port is not None and port.session_affinity


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_kernel_meets_the_expectation(
    kernel: Kernel, run: Run, observations: dict[str, Observed]
) -> None:
    observed = _observe_run(kernel, run, observations)
    expect = run.case.expect
    problem = mismatch(
        observed,
        verdict=expect.verdict,
        endpoints=expect.endpoints,
        masquerade=expect.masquerade,
        packet=run.case.packet,
        sticky=_sticky(run, kernel),
        topology=kernel.topology,
    )
    assert problem is None, problem


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)
def test_tracer_agrees_with_the_kernel(
    kernel: Kernel, run: Run, observations: dict[str, Observed]
) -> None:
    require_module(f"kubenet.trace.{run.mode.value}")
    from kubenet.trace import trace

    plan = kernel.load(run.mode, run.scenario.service_map, run.scenario.options)
    traced = trace(plan, run.case.packet)
    observed = _observe_run(kernel, run, observations)
    problem = mismatch(
        observed,
        verdict=traced.verdict,
        endpoints=traced.endpoints,
        masquerade=traced.masquerade,
        packet=run.case.packet,
        sticky=_sticky(run, kernel),
        topology=kernel.topology,
    )
    assert problem is None, f"tracer and kernel disagree: {problem}\n  " + "\n  ".join(traced.rules)


# Explicit checks of the behaviours that matter most, each with its own small map, so
# they hold even if the shared suite changes.

POD_A, POD_B = TOPOLOGY["pod-a"]["ipv4"], TOPOLOGY["pod-b"]["ipv4"]
modes = pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)


def _sample(
    kernel: Kernel,
    mode: ProxyMode,
    ports: list[ServicePort],
    src: str,
    dst: str,
    dport: int,
    *,
    protocol: Protocol = Protocol.TCP,
    options: RenderOptions = BASE_OPTIONS,
    attempts: int = REPLY_ATTEMPTS,
) -> Observed:
    kernel.load(mode, ServiceMap.of(ports), options)
    start = time.monotonic()
    first = kernel.topology.request(protocol, src, dst, dport, timeout=DROP_TIMEOUT)
    took = time.monotonic() - start
    rest = [
        kernel.topology.request(protocol, src, dst, dport, timeout=DROP_TIMEOUT)
        for _ in range(attempts - 1)
    ]
    return Observed((first, *rest), took)


@modes
def test_clusterip_reaches_every_ready_endpoint_and_no_other(
    kernel: Kernel, mode: ProxyMode
) -> None:
    ready = (ep("pod-a"), ep("pod-b"), ep("pod-r"))
    unready = Endpoint(TOPOLOGY["pod-c"]["ipv4"], TCP_TARGET, ready=False, serving=False)
    port = svc("all-ready", "10.96.1.10", ready)
    port = replace(port, endpoints=tuple(sorted((*ready, unready))))
    seen = _sample(kernel, mode, [port], CLIENT, "10.96.1.10", 80)
    assert seen.outcomes == {Outcome.REPLY}
    assert seen.pods == {"pod-a", "pod-b", "pod-r"}, seen


@modes
def test_nodeport_on_the_node_ip(kernel: Kernel, mode: ProxyMode) -> None:
    port = svc("np", "10.96.1.20", (ep("pod-a"), ep("pod-b")), node_port=30200)
    seen = _sample(kernel, mode, [port], CLIENT, NODE_IP, 30200)
    assert seen.outcomes == {Outcome.REPLY}
    assert seen.endpoints == {f"{POD_A}:{TCP_TARGET}", f"{POD_B}:{TCP_TARGET}"}, seen


@modes
@pytest.mark.parametrize(("protocol", "dport"), [(Protocol.TCP, 80), (Protocol.UDP, 53)])
def test_a_service_without_endpoints_is_refused_at_once(
    kernel: Kernel, mode: ProxyMode, protocol: Protocol, dport: int
) -> None:
    port = svc("empty", "10.96.1.30", (), port=dport, protocol=protocol)
    seen = _sample(kernel, mode, [port], CLIENT, "10.96.1.30", dport, protocol=protocol, attempts=3)
    assert seen.outcomes <= {Outcome.REFUSED, Outcome.UNREACHABLE}, seen
    assert seen.first_seconds < REJECT_WITHIN


@modes
def test_local_policy_without_local_endpoints_drops(kernel: Kernel, mode: ProxyMode) -> None:
    port = svc("far", "10.96.1.40", (ep("pod-r"),), node_port=30400, external_local=True)
    with kernel.topology.server(kernel.topology.node, "node", [30400]):
        seen = _sample(kernel, mode, [port], CLIENT, NODE_IP, 30400, attempts=1)
    assert seen.outcomes == {Outcome.TIMEOUT}, seen


@modes
def test_affinity_keeps_one_client_on_one_pod(kernel: Kernel, mode: ProxyMode) -> None:
    endpoints = (ep("pod-a"), ep("pod-b"), ep("pod-r"))
    sticky = svc("sticky", "10.96.1.50", endpoints, affinity=10800)
    loose = svc("loose", "10.96.1.51", endpoints)
    for src in (CLIENT, POD_C):
        seen = _sample(kernel, mode, [sticky, loose], src, "10.96.1.50", 80, attempts=10)
        assert seen.outcomes == {Outcome.REPLY} and len(seen.pods) == 1, seen
    # The same sample size without affinity does spread, so the check above can fail.
    spread = _sample(kernel, mode, [sticky, loose], CLIENT, "10.96.1.51", 80, attempts=20)
    assert len(spread.pods) > 1, spread


@modes
def test_masquerade_is_visible_to_the_pod(kernel: Kernel, mode: ProxyMode) -> None:
    port = svc("masq", "10.96.1.60", (ep("pod-a"),))
    off_cluster = _sample(kernel, mode, [port], CLIENT, "10.96.1.60", 80, attempts=3)
    assert off_cluster.peers == {NODE_IP}, off_cluster
    from_pod = _sample(kernel, mode, [port], POD_C, "10.96.1.60", 80, attempts=3)
    assert from_pod.peers == {POD_C}, from_pod


@modes
def test_an_ipv6_clusterip_works(kernel: Kernel, mode: ProxyMode) -> None:
    endpoints = (ep("pod-a", ipv6=True), ep("pod-b", ipv6=True))
    port = svc("six", "fd00:96::1:70", endpoints)
    options = replace(BASE_OPTIONS, ip_family=IPFamily.IPV6)
    client6 = TOPOLOGY["client"]["ipv6"]
    seen = _sample(kernel, mode, [port], client6, "fd00:96::1:70", 80, options=options)
    assert seen.outcomes == {Outcome.REPLY}
    assert seen.endpoints == {f"[{TOPOLOGY[p]['ipv6']}]:{TCP_TARGET}" for p in ("pod-a", "pod-b")}
    assert seen.peers == {TOPOLOGY["node"]["ipv6"]}, seen


@modes
def test_udp_works(kernel: Kernel, mode: ProxyMode) -> None:
    endpoints = (ep("pod-a", UDP_TARGET), ep("pod-b", UDP_TARGET))
    port = svc("dns", "10.96.1.80", endpoints, port=53, protocol=Protocol.UDP)
    seen = _sample(kernel, mode, [port], POD_C, "10.96.1.80", 53, protocol=Protocol.UDP)
    assert seen.outcomes == {Outcome.REPLY}
    assert seen.endpoints == {f"{POD_A}:{UDP_TARGET}", f"{POD_B}:{UDP_TARGET}"}, seen
    assert seen.peers == {POD_C}
