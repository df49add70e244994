"""The shared scenario suite: the same Services, packets and expected outcomes for every backend.

Each :class:`Scenario` is a ServiceMap, the render options of one node, and packets
with what must happen to them. ``tests/test_scenarios.py`` runs every case through
each backend's tracer; ``tests/kernel/test_traffic.py`` sends the same cases as real
packets through the real kernel. The addresses are those of the test topology
(:data:`TOPOLOGY`), which the kernel harness builds exactly.

Expectations follow upstream kube-proxy's documented behaviour: off-cluster traffic to
a ClusterIP is masqueraded (detect-local by cluster CIDR), external traffic with the
Cluster policy is masqueraded, Local policy keeps the client address and uses only
node-local endpoints (DROP when there are none), and a service without endpoints is
REJECTed. Cases where upstream's two backends disagree with each other are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kubenet.model import Endpoint, IPFamily, Protocol, ServiceMap
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.trace import Packet, Verdict
from tests.builders import NODE, NODE_IP6, OTHER_NODE, endpoint, node_options, service_port
from tests.builders import NODE_IP as NODE_IP

#: The addresses of the test topology (see kubenet.testing.netns).
TOPOLOGY: dict[str, dict[str, str]] = {
    "node": {"ipv4": NODE_IP, "ipv6": NODE_IP6},
    "client": {"ipv4": "10.180.0.2", "ipv6": "fd00:180::2"},
    "pod-a": {"ipv4": "10.244.1.2", "ipv6": "fd00:244:1::2", "node": NODE},
    "pod-b": {"ipv4": "10.244.1.3", "ipv6": "fd00:244:1::3", "node": NODE},
    "pod-c": {"ipv4": "10.244.1.4", "ipv6": "fd00:244:1::4", "node": NODE},
    "pod-r": {"ipv4": "10.244.2.2", "ipv6": "fd00:244:2::2", "node": OTHER_NODE},
}
CLUSTER_CIDRS = ("10.244.0.0/16", "fd00:244::/32")
TCP_TARGET = 8080
UDP_TARGET = 9090

CLIENT = TOPOLOGY["client"]["ipv4"]
POD_C = TOPOLOGY["pod-c"]["ipv4"]

BASE_OPTIONS = node_options(NODE_IP, NODE_IP6, cluster_cidrs=CLUSTER_CIDRS)


def owner_of(ip: str) -> str:
    """The topology member (namespace role) that owns an address."""
    for role, addrs in TOPOLOGY.items():
        if ip in (addrs["ipv4"], addrs["ipv6"]):
            return role
    raise KeyError(ip)


def ep(pod: str, port: int = TCP_TARGET, *, ipv6: bool = False) -> Endpoint:
    """A ready endpoint on pod ``pod`` of the topology."""
    addrs = TOPOLOGY[pod]
    node = addrs["node"]
    return endpoint(addrs["ipv6" if ipv6 else "ipv4"], port, local=node == NODE, node=node)


#: One Service port, its endpoints selected as translate would (the tables' short name).
svc = service_port


@dataclass(frozen=True)
class Expect:
    verdict: Verdict
    endpoints: tuple[str, ...] = ()
    masquerade: bool = False


def dnat(*endpoints: str, masquerade: bool) -> Expect:
    return Expect(Verdict.DNAT, tuple(sorted(endpoints)), masquerade)


DROP = Expect(Verdict.DROP)
REJECT = Expect(Verdict.REJECT)


@dataclass(frozen=True)
class Case:
    name: str
    packet: Packet
    expect: Expect


def case(
    name: str,
    src: str,
    dst: str,
    dport: int,
    expect: Expect,
    protocol: Protocol = Protocol.TCP,
) -> Case:
    return Case(name, Packet(src=src, dst=dst, protocol=protocol, dport=dport), expect)


@dataclass(frozen=True)
class Scenario:
    name: str
    service_map: ServiceMap
    cases: tuple[Case, ...]
    options: RenderOptions = field(default=BASE_OPTIONS)


def _addr(pod: str, port: int = TCP_TARGET) -> str:
    return f"{TOPOLOGY[pod]['ipv4']}:{port}"


def _addr6(pod: str, port: int = TCP_TARGET) -> str:
    return f"[{TOPOLOGY[pod]['ipv6']}]:{port}"


A, B, R = _addr("pod-a"), _addr("pod-b"), _addr("pod-r")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "clusterip",
        ServiceMap.of(
            [
                svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-b"), ep("pod-r")), port_name="http"),
                svc(
                    "dns",
                    "10.96.0.53",
                    (ep("pod-a", UDP_TARGET), ep("pod-b", UDP_TARGET)),
                    port=53,
                    protocol=Protocol.UDP,
                    port_name="dns",
                ),
            ]
        ),
        (
            case("off-cluster client reaches every endpoint, masqueraded",
                 CLIENT, "10.96.0.10", 80, dnat(A, B, R, masquerade=True)),
            case("pod reaches every endpoint with its own address",
                 POD_C, "10.96.0.10", 80, dnat(A, B, R, masquerade=False)),
            case("the node itself reaches every endpoint, masqueraded",
                 NODE_IP, "10.96.0.10", 80, dnat(A, B, R, masquerade=True)),
            case("UDP ClusterIP from a pod",
                 POD_C, "10.96.0.53", 53,
                 dnat(_addr("pod-a", UDP_TARGET), _addr("pod-b", UDP_TARGET), masquerade=False),
                 Protocol.UDP),
            case("UDP ClusterIP from off-cluster",
                 CLIENT, "10.96.0.53", 53,
                 dnat(_addr("pod-a", UDP_TARGET), _addr("pod-b", UDP_TARGET), masquerade=True),
                 Protocol.UDP),
        ),
    ),
    Scenario(
        "hairpin",
        ServiceMap.of([svc("self", "10.96.0.15", (ep("pod-a"),))]),
        (
            case("a pod reaching itself through its service is masqueraded",
                 TOPOLOGY["pod-a"]["ipv4"], "10.96.0.15", 80, dnat(A, masquerade=True)),
        ),
    ),
    Scenario(
        "sctp",
        ServiceMap.of(
            [svc("assoc", "10.96.0.11", (ep("pod-a"), ep("pod-b")), protocol=Protocol.SCTP)]
        ),
        (
            case("SCTP ClusterIP from a pod", POD_C, "10.96.0.11", 80,
                 dnat(A, B, masquerade=False), Protocol.SCTP),
        ),
    ),
    Scenario(
        "no-endpoints",
        ServiceMap.of([svc("empty", "10.96.0.20", (), node_port=30020)]),
        (
            case("ClusterIP without endpoints is rejected", CLIENT, "10.96.0.20", 80, REJECT),
            case("NodePort without endpoints is rejected", CLIENT, NODE_IP, 30020, REJECT),
            case("ClusterIP without endpoints is rejected for pods too",
                 POD_C, "10.96.0.20", 80, REJECT),
        ),
    ),
    Scenario(
        "nodeport",
        ServiceMap.of(
            [svc("np", "10.96.0.30", (ep("pod-a"), ep("pod-r")), node_port=30080)]
        ),
        (
            case("NodePort on the node IP reaches every endpoint, masqueraded",
                 CLIENT, NODE_IP, 30080, dnat(A, R, masquerade=True)),
            case("the ClusterIP of a NodePort service still works",
                 CLIENT, "10.96.0.30", 80, dnat(A, R, masquerade=True)),
            case("the node reaching its own NodePort is masqueraded",
                 NODE_IP, NODE_IP, 30080, dnat(A, R, masquerade=True)),
            case("a port that is no NodePort is left alone",
                 CLIENT, NODE_IP, 30081, Expect(Verdict.ACCEPT)),
        ),
    ),
    Scenario(
        "external-local",
        ServiceMap.of(
            [
                svc(
                    "local",
                    "10.96.0.40",
                    (ep("pod-a"), ep("pod-r")),
                    node_port=30040,
                    lb_ips=("203.0.113.40",),
                    external_local=True,
                )
            ]
        ),
        (
            case("NodePort with Local policy keeps the client address, local endpoints only",
                 CLIENT, NODE_IP, 30040, dnat(A, masquerade=False)),
            case("load-balancer IP with Local policy: local endpoints, no masquerade",
                 CLIENT, "203.0.113.40", 80, dnat(A, masquerade=False)),
            case("the ClusterIP of a Local service uses every endpoint",
                 CLIENT, "10.96.0.40", 80, dnat(A, R, masquerade=True)),
            case("a pod reaching the NodePort short-circuits to every endpoint",
                 POD_C, NODE_IP, 30040, dnat(A, R, masquerade=False)),
            case("the node reaching the NodePort is masqueraded to every endpoint",
                 NODE_IP, NODE_IP, 30040, dnat(A, R, masquerade=True)),
        ),
    ),
    Scenario(
        "external-local-no-local-endpoints",
        ServiceMap.of(
            [svc("far", "10.96.0.50", (ep("pod-r"),), node_port=30050, external_local=True)]
        ),
        (
            case("NodePort with Local policy and no local endpoint drops",
                 CLIENT, NODE_IP, 30050, DROP),
            case("its ClusterIP still reaches the remote endpoint",
                 CLIENT, "10.96.0.50", 80, dnat(R, masquerade=True)),
        ),
    ),
    Scenario(
        "internal-local",
        ServiceMap.of(
            [
                svc("near", "10.96.0.60", (ep("pod-a"), ep("pod-r")), internal_local=True),
                svc("nowhere", "10.96.0.61", (ep("pod-r"),), internal_local=True),
            ]
        ),
        (
            case("internalTrafficPolicy Local uses only node-local endpoints",
                 POD_C, "10.96.0.60", 80, dnat(A, masquerade=False)),
            case("off-cluster traffic to it is masqueraded",
                 CLIENT, "10.96.0.60", 80, dnat(A, masquerade=True)),
            case("internalTrafficPolicy Local without a local endpoint drops",
                 POD_C, "10.96.0.61", 80, DROP),
        ),
    ),
    Scenario(
        "affinity",
        ServiceMap.of(
            [svc("sticky", "10.96.0.70", (ep("pod-a"), ep("pod-b")), affinity=10800)]
        ),
        (
            case("ClientIP affinity may still start on any endpoint",
                 POD_C, "10.96.0.70", 80, dnat(A, B, masquerade=False)),
        ),
    ),
    Scenario(
        "masquerade-all",
        ServiceMap.of([svc("all", "10.96.0.80", (ep("pod-a"), ep("pod-b")))]),
        (
            case("masqueradeAll masquerades pod traffic too",
                 POD_C, "10.96.0.80", 80, dnat(A, B, masquerade=True)),
        ),
        options=replace(BASE_OPTIONS, masquerade_all=True),
    ),
    Scenario(
        "no-local-detector",
        ServiceMap.of([svc("plain", "10.96.0.85", (ep("pod-a"), ep("pod-b")))]),
        (
            case("without a cluster CIDR off-cluster traffic is not masqueraded",
                 CLIENT, "10.96.0.85", 80, dnat(A, B, masquerade=False)),
        ),
        options=replace(BASE_OPTIONS, local_detector=LocalDetector()),
    ),
    Scenario(
        "detect-local-interface-prefix",
        ServiceMap.of([svc("ifp", "10.96.0.86", (ep("pod-a"),))]),
        (
            Case("traffic from a pod interface is local",
                 Packet(POD_C, "10.96.0.86", Protocol.TCP, 80, iif="kn-pod-c"),
                 dnat(A, masquerade=False)),
            Case("traffic from elsewhere is masqueraded",
                 Packet(CLIENT, "10.96.0.86", Protocol.TCP, 80, iif="kn-client"),
                 dnat(A, masquerade=True)),
        ),
        options=replace(
            BASE_OPTIONS,
            local_detector=LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="kn-pod"),
        ),
    ),
    Scenario(
        "external-ip",
        ServiceMap.of(
            [svc("ext", "10.96.0.90", (ep("pod-a"),), external_ips=("198.51.100.90",))]
        ),
        (
            case("an external IP reaches the endpoints, masqueraded (Cluster policy)",
                 CLIENT, "198.51.100.90", 80, dnat(A, masquerade=True)),
        ),
    ),
    Scenario(
        "load-balancer-source-ranges",
        ServiceMap.of(
            [
                svc("lb-allow", "10.96.0.111", (ep("pod-a"),), lb_ips=("203.0.113.111",),
                    source_ranges=("10.180.0.0/24",)),
                svc("lb-deny", "10.96.0.112", (ep("pod-a"),), lb_ips=("203.0.113.112",),
                    source_ranges=("10.180.0.128/25",)),
            ]
        ),
        (
            case("a client inside loadBalancerSourceRanges gets through",
                 CLIENT, "203.0.113.111", 80, dnat(A, masquerade=True)),
            case("a client outside loadBalancerSourceRanges is dropped",
                 CLIENT, "203.0.113.112", 80, DROP),
            case("source ranges do not apply to the ClusterIP",
                 CLIENT, "10.96.0.112", 80, dnat(A, masquerade=True)),
        ),
    ),
    Scenario(
        "nodeport-addresses",
        ServiceMap.of([svc("npa", "10.96.0.140", (ep("pod-a"),), node_port=30140)]),
        (
            case("NodePort on an address inside --nodeport-addresses",
                 CLIENT, NODE_IP, 30140, dnat(A, masquerade=True)),
        ),
        options=replace(BASE_OPTIONS, nodeport_addresses=("10.180.0.0/24",)),
    ),
    Scenario(
        "ipv6",
        ServiceMap.of(
            [
                svc(
                    "dual",
                    ("10.96.0.120", "fd00:96::120"),
                    (
                        ep("pod-a"),
                        ep("pod-b"),
                        ep("pod-a", ipv6=True),
                        ep("pod-b", ipv6=True),
                    ),
                    node_port=30120,
                )
            ]
        ),
        (
            case("IPv6 ClusterIP from off-cluster, masqueraded",
                 TOPOLOGY["client"]["ipv6"], "fd00:96::120", 80,
                 dnat(_addr6("pod-a"), _addr6("pod-b"), masquerade=True)),
            case("IPv6 ClusterIP from a pod",
                 TOPOLOGY["pod-c"]["ipv6"], "fd00:96::120", 80,
                 dnat(_addr6("pod-a"), _addr6("pod-b"), masquerade=False)),
            case("IPv6 NodePort",
                 TOPOLOGY["client"]["ipv6"], TOPOLOGY["node"]["ipv6"], 30120,
                 dnat(_addr6("pod-a"), _addr6("pod-b"), masquerade=True)),
        ),
        options=replace(BASE_OPTIONS, ip_family=IPFamily.IPV6),
    ),
)


def all_cases() -> list[tuple[Scenario, Case]]:
    """Every (scenario, case) pair, for parametrised tests."""
    return [(s, c) for s in SCENARIOS for c in s.cases]


def case_id(pair: tuple[Scenario, Case]) -> str:
    return f"{pair[0].name}: {pair[1].name}"
