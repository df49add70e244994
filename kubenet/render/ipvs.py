"""Render a ServiceMap as kube-proxy's IPVS mode, for one IP family.

The layout follows upstream's ``pkg/proxy/ipvs`` (``proxier.go``, ``ipset.go``), so
``ipvsadm -Ln``, ``ipset list`` and ``iptables-save`` read as they do on an upstream
node. A plan has three parts:

* IPVS virtual services: one per ClusterIP, external IP and load-balancer IP (on
  the Service port), and one per NodePort on each node address ``--nodeport-addresses``
  chooses. NAT (masquerade) forwarding to the selected endpoints, weight 1, the
  ``--ipvs-scheduler`` (rr by default), and persistence with the affinity timeout for
  ClientIP affinity. The ClusterIPs, and the external / load-balancer IPs that are not
  node addresses, are bound on the ``kube-ipvs0`` dummy device, so the kernel
  delivers their packets locally where IPVS takes them over.
* The ipsets upstream uses, with upstream's names, types and comments; IPv6 sets are
  named ``KUBE-6-...`` (cut to ipset's 31 characters), as upstream names them.
* The helper iptables rules that consult the sets: masquerade marks for off-cluster
  ClusterIP traffic, NodePorts, load balancers and external IPs, hairpin masquerade
  (``KUBE-LOOP-BACK``), the loadBalancerSourceRanges firewall
  (``KUBE-PROXY-FIREWALL`` -> ``KUBE-SOURCE-RANGES-FIREWALL``), and
  ``KUBE-IPVS-FILTER``, which rejects new connections to a bound address on a port
  that is no service. It is an ordinary :class:`~kubenet.render.iptables.IptablesPlan`.

Behaviour worth knowing, all of it upstream's unless said otherwise:

* A virtual service without real servers makes IPVS itself answer with ICMP port
  unreachable, so a Service without endpoints is rejected with no iptables rule.
* Real servers are the selected endpoints of the policy that applies: the internal
  policy for the ClusterIP, the external policy for everything else; Local means the
  node-local endpoints only. (Upstream falls back to every endpoint when a Local
  policy finds no local one, to let local pods through; this renderer keeps to local
  endpoints, which the other backends also do: such a Service answers nothing here.)
* There is no short-circuit for pods reaching an external destination of a Local
  Service, and no masquerade for the node reaching such a NodePort: IPVS has one
  real-server list per virtual service.
* Load-balancer IPs with ipMode Proxy are not programmed (KEP-1860). A source range
  of length zero allows everything (ipset cannot store a /0 network).
* Choices shared with the iptables renderer: ``MASQUERADE --random-fully``; NodePorts
  on loopback are not served. Upstream's ``--ipvs-exclude-cidrs``, strict ARP and
  IPVS timeouts are node settings the dataplane would apply, not part of a plan.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from kubenet.model import (
    Endpoint,
    IPFamily,
    IPMode,
    Protocol,
    ServiceMap,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from kubenet.options import RenderOptions
from kubenet.render.iptables import IptablesPlan, JumpRule, RuleContext, nodeport_destinations

#: The dummy device the service addresses are bound on.
DUMMY_DEVICE = "kube-ipvs0"

# Chain names (upstream's constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
#: Rejects new connections to bound addresses on ports that are no service (issue 72236).
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
#: Keeps the node off load balancers whose source ranges leave it out (issue 119656).
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

#: ipset's limit on set names.
MAX_SET_NAME = 31
#: The bitmap:port sets cover every port.
PORT_RANGE = "0-65535"
#: Upstream's defaults for every hash set.
HASH_SIZE = 1024
MAX_ELEM = 65536


class Scheduler(enum.StrEnum):
    """--ipvs-scheduler: the IPVS scheduling algorithms kube-proxy documents."""

    RR = "rr"  # round robin (the default)
    LC = "lc"  # least connection
    DH = "dh"  # destination hashing
    SH = "sh"  # source hashing
    SED = "sed"  # shortest expected delay
    NQ = "nq"  # never queue


class SetType(enum.StrEnum):
    """The ipset types the IPVS mode uses."""

    HASH_IP = "hash:ip"
    HASH_IP_PORT = "hash:ip,port"
    HASH_IP_PORT_IP = "hash:ip,port,ip"
    HASH_IP_PORT_NET = "hash:ip,port,net"
    BITMAP_PORT = "bitmap:port"

    @property
    def dimensions(self) -> int:
        """How many ``src``/``dst`` flags a ``-m set`` match of this type consumes."""
        return 1 if self in (SetType.HASH_IP, SetType.BITMAP_PORT) else self.count(",") + 1


# The sets, in upstream's order (ipsetInfo): base name, type, comment.
LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

SETS: tuple[tuple[str, SetType, str], ...] = (
    (
        LOOP_BACK,
        SetType.HASH_IP_PORT_IP,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        CLUSTER_IP,
        SetType.HASH_IP_PORT,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        EXTERNAL_IP,
        SetType.HASH_IP_PORT,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        EXTERNAL_IP_LOCAL,
        SetType.HASH_IP_PORT,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (LOAD_BALANCER, SetType.HASH_IP_PORT, "Kubernetes service lb portal"),
    (
        LOAD_BALANCER_FW,
        SetType.HASH_IP_PORT,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        LOAD_BALANCER_LOCAL,
        SetType.HASH_IP_PORT,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        LOAD_BALANCER_SOURCE_IP,
        SetType.HASH_IP_PORT_IP,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        LOAD_BALANCER_SOURCE_CIDR,
        SetType.HASH_IP_PORT_NET,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (NODE_PORT_TCP, SetType.BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_TCP,
        SetType.BITMAP_PORT,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (NODE_PORT_UDP, SetType.BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_UDP,
        SetType.BITMAP_PORT,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        NODE_PORT_SCTP,
        SetType.HASH_IP_PORT,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        NODE_PORT_LOCAL_SCTP,
        SetType.HASH_IP_PORT,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (HEALTH_CHECK_NODE_PORT, SetType.BITMAP_PORT, "Kubernetes health check node port"),
    (IPVS_IPS, SetType.HASH_IP, "Addresses on the ipvs interface"),
)
_SET_TYPES = {name: kind for name, kind, _ in SETS}
_SET_COMMENTS = {name: comment for name, _, comment in SETS}

# Sets whose rules are fixed jumps (upstream's ipsetWithIptablesChain), in rule order:
# base name, table, from chain, target, match flags, protocol (or "").
_SET_JUMPS: tuple[tuple[str, str, str, str, str, str], ...] = (
    (LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst", ""),
    (LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    # Each -LOCAL set comes before its plain one: Local NodePorts must not be marked.
    (NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    (NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    (NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst", ""),
    (LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
    (LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
)

_NAT_CHAINS = (KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER, KUBE_MARK_MASQ)
_FILTER_CHAINS = (
    KUBE_FORWARD,
    KUBE_NODE_PORT,
    KUBE_PROXY_FIREWALL,
    KUBE_SOURCE_RANGES_FIREWALL,
    KUBE_IPVS_FILTER,
    KUBE_IPVS_OUT_FILTER,
)


def set_name(base: str, family: IPFamily) -> str:
    """A set's name for a family: IPv6 sets are ``KUBE-6-...``, cut to 31 characters."""
    if family is IPFamily.IPV4:
        return base
    return base.replace("KUBE-", "KUBE-6-", 1)[:MAX_SET_NAME]


@dataclass(frozen=True)
class IpSet:
    """One ipset and its entries, spelled as ``ipset save`` spells them (sorted)."""

    name: str
    type: SetType
    family: IPFamily
    comment: str
    entries: tuple[str, ...] = ()

    @property
    def create(self) -> str:
        """The ``create`` line (without ``-exist``), as upstream creates the set."""
        if self.type is SetType.BITMAP_PORT:
            return f"create {self.name} {self.type} range {PORT_RANGE}"
        inet = "inet" if self.family is IPFamily.IPV4 else "inet6"
        return (
            f"create {self.name} {self.type} family {inet} hashsize {HASH_SIZE} maxelem {MAX_ELEM}"
        )

    def restore_lines(self) -> list[str]:
        """``ipset restore`` input that creates the set and adds its entries."""
        return [self.create, *(f"add {self.name} {entry}" for entry in self.entries)]


@dataclass(frozen=True, order=True)
class RealServer:
    """One IPVS destination: an endpoint, NAT-forwarded, with a weight."""

    ip: str
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class VirtualServer:
    """One IPVS virtual service and its real servers.

    Equality covers what the kernel holds (so a plan's services compare with ones read
    back); ``service`` only says which Service port the plan made it for.
    """

    protocol: Protocol
    ip: str
    port: int
    scheduler: str = Scheduler.RR.value
    #: Persistence timeout in seconds (ClientIP affinity); None when not persistent.
    timeout: int | None = None
    real_servers: tuple[RealServer, ...] = ()
    service: ServicePortName | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[Protocol, str, int]:
        """What identifies the virtual service in the kernel."""
        return (self.protocol, self.ip, self.port)

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def family(self) -> IPFamily:
        return IPFamily.of(self.ip)

    @property
    def ipvsadm_service(self) -> str:
        """The ``-t/-u/--sctp-service ADDRESS`` part of an ipvsadm command."""
        flag = {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}
        return f"{flag[self.protocol]} {self.address}"

    def ipvsadm_lines(self) -> list[str]:
        """``ipvsadm-restore`` lines: the service, then each real server (masquerading)."""
        head = f"-A {self.ipvsadm_service} -s {self.scheduler}"
        if self.timeout is not None:
            head += f" -p {self.timeout}"
        return [head] + [
            f"-a {self.ipvsadm_service} -r {rs.address} -m -w {rs.weight}"
            for rs in self.real_servers
        ]


@dataclass(frozen=True)
class IpvsPlan:
    """The rendered IPVS mode of one family: services, bound addresses, sets, helper rules."""

    backend: ClassVar[str] = "ipvs"
    family: IPFamily
    options: RenderOptions
    scheduler: Scheduler
    virtual_servers: tuple[VirtualServer, ...]
    #: Addresses to bind on :data:`DUMMY_DEVICE` (the ``KUBE-IPVS-IPS`` set's members).
    bound_addresses: tuple[str, ...]
    #: Every set of the mode, in upstream's order, including the empty ones (rules
    #: refer to some sets whether or not they have members).
    ipsets: tuple[IpSet, ...]
    #: The helper rules, as an iptables plan: restore text plus base-chain jumps.
    helper: IptablesPlan

    @property
    def ipset_restore(self) -> str:
        """``ipset restore`` input that creates every set with its entries."""
        return "".join(f"{line}\n" for s in self.ipsets for line in s.restore_lines())

    @property
    def iptables_restore(self) -> str:
        """``iptables-restore --noflush`` (or ``ip6tables-restore``) input of the helper rules."""
        return self.helper.restore

    @property
    def ipvsadm_restore(self) -> str:
        """``ipvsadm-restore`` input of every virtual service and real server."""
        return "".join(f"{line}\n" for vs in self.virtual_servers for line in vs.ipvsadm_lines())

    @property
    def text(self) -> str:
        """What ``node-proxy render`` prints: the three inputs, each under a comment header.

        Each section is valid input for its tool (``#`` lines are comments to ipset
        and iptables-restore; cut the ipvsadm section at its header for
        ``ipvsadm-restore``). The bound addresses are listed in the IPVS header.
        """
        tool = "iptables" if self.family is IPFamily.IPV4 else "ip6tables"
        prefix = 32 if self.family is IPFamily.IPV4 else 128
        out = [
            f"# ==== ipset restore input ({self.family}): the sets the helper rules consult ====",
            self.ipset_restore.rstrip("\n"),
            f"# ==== {tool}-restore --noflush input: the helper rules ====",
            self.helper.text.rstrip("\n"),
            f"# ==== ipvsadm-restore input ({self.family}): virtual services, real servers ====",
            f"# Addresses bound on {DUMMY_DEVICE} (ip address add ADDRESS/{prefix}"
            f" dev {DUMMY_DEVICE}):",
            *(f"#   {address}" for address in self.bound_addresses),
        ]
        if self.virtual_servers:
            out.append(self.ipvsadm_restore.rstrip("\n"))
        return "\n".join(out) + "\n"

    def ipset(self, base: str) -> IpSet:
        """A set by its upstream (IPv4) name, e.g. ``ipset("KUBE-CLUSTER-IP")``."""
        name = set_name(base, self.family)
        for s in self.ipsets:
            if s.name == name:
                return s
        raise KeyError(base)

    def virtual_server(self, protocol: Protocol, ip: str, port: int) -> VirtualServer | None:
        """The virtual service at ``protocol ip:port``, if the plan has one."""
        for vs in self.virtual_servers:
            if vs.key == (protocol, ip, port):
                return vs
        return None


def render(
    service_map: ServiceMap,
    options: RenderOptions,
    *,
    scheduler: Scheduler | str = Scheduler.RR,
) -> IpvsPlan:
    """Render ``service_map`` for ``options.ip_family`` in upstream's IPVS layout."""
    family = options.ip_family
    sched = Scheduler(scheduler)
    ctx = RuleContext.of(options)
    builder = _Builder(family, sched, options)
    for port in service_map.for_family(family):
        builder.add_port(port, ctx)
    ipsets = builder.ipsets()
    helper = IptablesPlan(
        family=family,
        options=options,
        restore=_helper_restore(options, ctx, ipsets, builder.out_filter),
        jumps=_jumps(),
    )
    return IpvsPlan(
        family=family,
        options=options,
        scheduler=sched,
        virtual_servers=tuple(builder.services.values()),
        bound_addresses=tuple(sorted(builder.bound, key=ipaddress.ip_address)),
        ipsets=ipsets,
        helper=helper,
    )


class _Builder:
    """Collects one render's virtual services, bound addresses and set entries."""

    def __init__(self, family: IPFamily, scheduler: Scheduler, options: RenderOptions) -> None:
        self.family = family
        self.scheduler = scheduler
        self.node_ips = frozenset(options.node_ips)
        #: The node's primary address of the family (upstream's nodeIP).
        primary = options.node_ips_for(family)
        self.node_ip = ipaddress.ip_address(primary[0]) if primary else None
        chosen = nodeport_destinations(options)
        if chosen is None:
            chosen = tuple(
                ip
                for ip in options.node_ips_for(family)
                if not (addr := ipaddress.ip_address(ip)).is_loopback
                and not (addr.version == 6 and addr.is_link_local)
            )
        self.nodeport_ips = chosen
        self.services: dict[tuple[Protocol, str, int], VirtualServer] = {}
        self.bound: dict[str, None] = {}
        self.entries: dict[str, set[str]] = {name: set() for name, _, _ in SETS}
        #: (LB IP, protocol, port) the node must not reach (its IP is outside the ranges).
        self.out_filter: list[tuple[str, str, int]] = []

    def add_port(self, port: ServicePort, ctx: RuleContext) -> None:
        cluster_ip = port.cluster_ip(self.family)
        assert cluster_ip is not None  # for_family keeps only ports with one
        proto = port.protocol.lower()
        svc_port = port.port
        ext_local = port.external_policy is TrafficPolicy.LOCAL
        internal = _real_servers(
            port.local_endpoints if port.internal_policy_local else port.cluster_endpoints
        )
        external = _real_servers(port.local_endpoints if ext_local else port.cluster_endpoints)

        for e in port.endpoints:
            # Hairpin: a pod reaching itself through a service must see another source.
            if e.is_local:
                self.entries[LOOP_BACK].add(f"{e.ip},{proto}:{e.port},{e.ip}")

        self.entries[CLUSTER_IP].add(f"{cluster_ip},{proto}:{svc_port}")
        self._service(port, cluster_ip, svc_port, internal, bind=True)

        for ip in port.external_ips:
            self.entries[EXTERNAL_IP_LOCAL if ext_local else EXTERNAL_IP].add(
                f"{ip},{proto}:{svc_port}"
            )
            self._service(port, ip, svc_port, external, bind=ip not in self.node_ips)

        for ingress in port.load_balancer_ingress:
            if ingress.ip_mode is not IPMode.VIP:
                continue
            ip = ingress.ip
            entry = f"{ip},{proto}:{svc_port}"
            self.entries[LOAD_BALANCER].add(entry)
            if ext_local:
                self.entries[LOAD_BALANCER_LOCAL].add(entry)
            self._firewall(port, ip, entry)
            self._service(port, ip, svc_port, external, bind=ip not in self.node_ips)

        if port.node_port is not None and self.nodeport_ips:
            if port.protocol is Protocol.SCTP:
                # SCTP NodePorts live in a hash:ip,port set: one entry per node address.
                np_entries = [f"{ip},sctp:{port.node_port}" for ip in self.nodeport_ips]
                sets = (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP)
            else:
                np_entries = [str(port.node_port)]
                tcp = port.protocol is Protocol.TCP
                sets = (
                    (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP)
                    if tcp
                    else (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP)
                )
            self.entries[sets[0]].update(np_entries)
            if ext_local:
                self.entries[sets[1]].update(np_entries)
            for ip in self.nodeport_ips:
                self._service(port, ip, port.node_port, external, bind=False)

        if port.health_check_node_port is not None:
            self.entries[HEALTH_CHECK_NODE_PORT].add(str(port.health_check_node_port))

    def _firewall(self, port: ServicePort, lb_ip: str, entry: str) -> None:
        """loadBalancerSourceRanges for one load-balancer IP."""
        ranges = [ipaddress.ip_network(c, strict=False) for c in port.load_balancer_source_ranges]
        if not ranges or any(r.prefixlen == 0 for r in ranges):
            return
        self.entries[LOAD_BALANCER_FW].add(entry)
        for net in ranges:
            # ipset prints a host-length network as a bare address; spell it so too,
            # so what the dataplane reads back compares equal.
            text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            self.entries[LOAD_BALANCER_SOURCE_CIDR].add(f"{entry},{text}")
        if self.node_ip is not None and any(self.node_ip in net for net in ranges):
            # A request from the node to a VIP-like load balancer loops back with the
            # VIP as source; let that through too.
            self.entries[LOAD_BALANCER_SOURCE_IP].add(f"{entry},{lb_ip}")
        else:
            self.out_filter.append((lb_ip, port.protocol.lower(), port.port))

    def _service(
        self,
        port: ServicePort,
        ip: str,
        number: int,
        real_servers: tuple[RealServer, ...],
        *,
        bind: bool,
    ) -> None:
        key = (port.protocol, ip, number)
        # Two Service ports claiming one virtual service: the first in map order keeps it.
        if key not in self.services:
            self.services[key] = VirtualServer(
                protocol=port.protocol,
                ip=ip,
                port=number,
                scheduler=self.scheduler.value,
                timeout=port.affinity_timeout,
                real_servers=real_servers,
                service=port.name,
            )
        if bind:
            self.bound.setdefault(ip, None)

    def ipsets(self) -> tuple[IpSet, ...]:
        self.entries[IPVS_IPS] = set(self.bound)
        return tuple(
            IpSet(
                name=set_name(base, self.family),
                type=kind,
                family=self.family,
                comment=comment,
                entries=tuple(sorted(self.entries[base], key=_entry_order)),
            )
            for base, kind, comment in SETS
        )


def _real_servers(endpoints: Iterable[Endpoint]) -> tuple[RealServer, ...]:
    """Weight-1 real servers, by address then port (and each address:port once)."""
    unique = {(e.ip, e.port) for e in endpoints}
    ordered = sorted(unique, key=lambda ip_port: (ipaddress.ip_address(ip_port[0]), ip_port[1]))
    return tuple(RealServer(ip, port) for ip, port in ordered)


def _entry_order(entry: str) -> tuple[int, str]:
    """Numbers numerically (bitmap:port entries), the rest as text: stable and readable."""
    return (int(entry), "") if entry.isdigit() else (1 << 17, entry)


def _match_set(name: str, flags: str, comment: str | None = None) -> str:
    head = f'-m comment --comment "{comment}" ' if comment else ""
    return f"{head}-m set --match-set {name} {flags}"


def _helper_restore(
    options: RenderOptions,
    ctx: RuleContext,
    ipsets: tuple[IpSet, ...],
    out_filter: list[tuple[str, str, int]],
) -> str:
    """The helper rules, in upstream's order (writeIptablesRules)."""
    family = options.ip_family
    mark = f"{options.masquerade_mark:#010x}"  # Go's %#08x pads the digits to 8: 0x00004000
    by_base = {base: s for (base, _, _), s in zip(SETS, ipsets, strict=True)}

    def name(base: str) -> str:
        return by_base[base].name

    def used(base: str) -> bool:
        return bool(by_base[base].entries)

    nat: list[str] = []
    filt: list[str] = []
    loopback = "127.0.0.0/8" if family is IPFamily.IPV4 else "::1/128"
    # Connections from the node to itself on loopback are none of ours.
    nat.append(f"-A {KUBE_SERVICES} -s {loopback} -j RETURN")

    for base, table, chain, target, flags, proto in _SET_JUMPS:
        if not used(base):
            continue
        p = f"-p {proto} " if proto else ""
        rule = f"-A {chain} {p}{_match_set(name(base), flags, _SET_COMMENTS[base])} -j {target}"
        (nat if table == "nat" else filt).append(rule)

    if used(CLUSTER_IP):

        def cluster(flags: str) -> str:
            match = _match_set(name(CLUSTER_IP), flags, _SET_COMMENTS[CLUSTER_IP])
            return f"-A {KUBE_SERVICES} {match}"

        if options.masquerade_all:
            nat.append(f"{cluster('dst,dst')} -j {KUBE_MARK_MASQ}")
        elif ctx.if_not_local is not None:
            # Off-cluster traffic to a ClusterIP may have been routed here from anywhere
            # and the endpoint may be on another node: masquerade so replies come back.
            nat.append(f"{cluster('dst,dst')} {ctx.if_not_local} -j {KUBE_MARK_MASQ}")
        else:
            # No way to tell pods apart: masquerade only what the node itself sends from
            # a service address (kube-ipvs0 holds every VIP, so the node may pick one as
            # its source), which would otherwise never get its replies.
            nat.append(f"{cluster('src,dst')} -j {KUBE_MARK_MASQ}")

    for base, masquerade in ((EXTERNAL_IP, True), (EXTERNAL_IP_LOCAL, False)):
        if not used(base):
            continue
        head = f"-A {KUBE_SERVICES} " + _match_set(name(base), "dst,dst", _SET_COMMENTS[base])
        if masquerade:
            nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        # Traffic from off the machine (not bridged from a pod, not from the node) and
        # traffic to external IPs that are the node's own stays with IPVS.
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")

    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    filt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in out_filter:
        # The node reaches a load balancer's VIP with the VIP as source.
        filt.append(
            f"-A {KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {proto}"
            f" --vport {port} -j DROP"
        )
    # Accept what IPVS will take, in case later rules of the hook would drop it.
    for base in (CLUSTER_IP, LOAD_BALANCER):
        if used(base):
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name(base)} dst,dst -j ACCEPT")

    filt.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules"'
        f" -m mark --mark {mark}/{mark} -j ACCEPT"
    )
    filt.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule"'
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )
    filt.append(
        f"-A {KUBE_NODE_PORT} "
        + _match_set(name(HEALTH_CHECK_NODE_PORT), "dst", _SET_COMMENTS[HEALTH_CHECK_NODE_PORT])
        + " -j ACCEPT"
    )
    for base, flags in (
        (LOAD_BALANCER, "dst,dst"),
        (CLUSTER_IP, "dst,dst"),
        (EXTERNAL_IP, "dst,dst"),
        (EXTERNAL_IP_LOCAL, "dst,dst"),
        (HEALTH_CHECK_NODE_PORT, "dst"),
    ):
        filt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name(base)} {flags} -j RETURN")
    # Anything else new to a bound address would reach the node's own sockets.
    filt.append(
        f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW"
        f" -m set --match-set {name(IPVS_IPS)} dst -j REJECT"
    )

    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    # Clear the mark, so a packet that traverses the stack again is not masqueraded twice.
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}")
    nat.append(
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully"
    )
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")

    out = ["*nat", *(f":{c} - [0:0]" for c in _NAT_CHAINS), *nat, "COMMIT"]
    out += ["*filter", *(f":{c} - [0:0]" for c in _FILTER_CHAINS), *filt, "COMMIT", ""]
    return "\n".join(out)


def _jumps() -> tuple[JumpRule, ...]:
    """Upstream's iptablesJumpChain for the IPVS mode."""

    def jump(table: str, chain: str, target: str, comment: str) -> JumpRule:
        return JumpRule(table, chain, ("-m", "comment", "--comment", comment, "-j", target))

    portals = "kubernetes service portals"
    firewall = "kube-proxy firewall rules"
    access = "kubernetes ipvs access filter"
    return (
        jump("nat", "OUTPUT", KUBE_SERVICES, portals),
        jump("nat", "PREROUTING", KUBE_SERVICES, portals),
        jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
        jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
        jump("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
        jump("filter", "INPUT", KUBE_PROXY_FIREWALL, firewall),
        jump("filter", "FORWARD", KUBE_PROXY_FIREWALL, firewall),
        jump("filter", "INPUT", KUBE_IPVS_FILTER, access),
        jump("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, access),
    )
