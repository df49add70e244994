"""Render a ServiceMap as an nftables ruleset (table ``kube-proxy``), for one IP family.

The layout keeps upstream kube-proxy's nftables mode where people meet it: the table
``ip kube-proxy`` / ``ip6 kube-proxy``, its base chains, hooks and priorities
(upstream's current ones: filter checks before DNAT for source ranges, after DNAT
for the "no endpoints" checks), and the names ``services``, ``service-ips``,
``service-nodeports``, ``nodeport-ips``, ``cluster-ips``, ``no-endpoint-services``,
``no-endpoint-nodeports``, ``firewall-ips``, ``reject-chain``, ``mark-for-masquerade``,
``masquerading`` and ``hairpin-connections``.

What differs is where the Services live. Loading cost in ``nft`` grows with the
square of the number of chains (and of named sets referenced by rules) in a
transaction, while set and map elements load linearly (see PERFORMANCE.md), so
Services and endpoints are *elements* and chains are shared:

- ``service-ips`` / ``service-nodeports`` map each service address to a chain shared
  by every Service with the same number of endpoints and the same kind of traffic:
  ``cluster-N`` and ``local-N`` DNAT to one of N cluster-policy / local-policy
  endpoints; ``external-N`` masquerades first (external traffic, Cluster policy);
  ``external-local-N`` short-circuits pod and node traffic to the cluster endpoints
  and sends the rest to the N local ones (Local policy). The ``nodeport-`` chains do
  the same for node ports.
- those chains pick the endpoint with one lookup in a concatenated map keyed by
  ``daddr . dport . slot``, the slot being ``numgen random mod N``:
  ``cluster-endpoints-tcp``, ``local-endpoints-tcp`` and their ``nodeport-`` twins
  (keyed by ``dport . slot``), one map per protocol (each chain has a rule per
  protocol, ``tcp dport`` matching only TCP, and so on). Grouping by N keeps the
  balance exact. The split by protocol works around nft 1.0.6, which cannot read a
  map whose data is typed ``ip daddr . th dport`` back from the kernel, and so
  could not add to the table later; ``ip daddr . tcp dport`` it reads fine.
- ``short-circuit-ips`` / ``short-circuit-nodeports`` say where Local-policy traffic
  from pods and from the node goes (``cluster-M`` for the Service's M endpoints).
- only ClientIP affinity needs per-Service state, so only those Services get chains
  of their own (``service-``, ``local-``, ``external-`` + upstream's hashed name) and
  one dynamic set ``affinity-...`` keyed by ``saddr . endpoint id``; the id is the
  constant expression ``numgen inc mod 1 offset ID`` because nft 1.0 cannot parse a
  constant inside a concatenated lookup key. One set per Service (not one per
  endpoint, as upstream) keeps set references cheap while staying exact: an
  endpoint keeps its clients while it exists, whatever else changes.
- masquerading for ClusterIP traffic is one static rule in ``services``
  (``daddr @cluster-ips`` and not from a local pod, or every packet with
  masqueradeAll), as in upstream's current layout. Hairpin traffic (a pod sent to
  itself through its Service) is caught in ``masquerading`` by ``ct status dnat``
  and the ``hairpin-connections`` set of ``endpoint . endpoint . l4proto . port``.
  Like upstream, the set holds node-local endpoints only: a pod on another node
  does not send its Service traffic through this node's DNAT, and listing every
  endpoint of a large cluster would double the elements to load. (The iptables
  backend marks every endpoint; the two differ only for a remote endpoint whose
  own connection is DNATed here back to itself.)
- loadBalancerSourceRanges is a set of guarded addresses (``firewall-ips``) and an
  interval set of allowed ``address . l4proto . port . source`` (``firewall-allow``).

So one endpoint change rewrites a handful of elements: see
:func:`kubenet.render.nft_ruleset.diff`. The full script (:attr:`NftablesPlan.text`)
declares, deletes and redefines the table in one ``nft -f`` transaction, which is
idempotent whatever was there before.

When two Service ports claim the same address and port (or node port), the first in
ServiceMap order wins, as the first matching rule does in the iptables backend.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import ClassVar

from kubenet.model import Endpoint, IPFamily, IPMode, ServiceMap, ServicePort
from kubenet.options import DetectLocalMode, RenderOptions
from kubenet.render.nft_ruleset import BaseChain, Chain, NftSet, Ruleset, frozen_elements

TABLE = "kube-proxy"

# Upstream's priorities: source-range filtering sees the service address (before
# DNAT at -100), the "no endpoints" checks see what DNAT left (priority filter).
_PRE_DNAT = -110
_DSTNAT = -100
_FILTER = 0
_SRCNAT = 100

_REJECT = "goto reject-chain"


@dataclass(frozen=True)
class NftablesPlan:
    """The rendered ruleset of one family, ready for ``nft -f``."""

    backend: ClassVar[str] = "nftables"
    family: IPFamily
    options: RenderOptions
    ruleset: Ruleset

    @cached_property
    def text(self) -> str:
        """The full ``nft -f`` script that atomically (re)creates the table."""
        return self.ruleset.script()


def render(service_map: ServiceMap, options: RenderOptions) -> NftablesPlan:
    """Render ``service_map`` for ``options.ip_family``."""
    family = options.ip_family
    builder = _Builder(family, options)
    for port in service_map.for_family(family):
        builder.add_port(port)
    return NftablesPlan(family=family, options=options, ruleset=builder.finish())


# ---------------------------------------------------------------------- naming


def service_chain_base(port: ServicePort) -> str:
    """Upstream's per-service name part: ``HASH-namespace/name/protocol/portname``.

    The hash (8 base32 characters of a SHA-256) keeps names distinct and is what
    ``nft list`` readers of upstream are used to.
    """
    n = port.name
    name = f"{n.namespace}/{n.name}/{n.protocol.lower()}/{n.port}"
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    full = f"{digest[:8]}-{name}"
    # nft names are at most 256 bytes; upstream keeps 16 for the prefix.
    return full if len(full) <= 240 else full[:237] + "..."


def endpoint_ids(endpoints: tuple[Endpoint, ...]) -> dict[Endpoint, int]:
    """A 32-bit id per endpoint, a function of its address only (so it is stable).

    Ids key a Service's affinity set. Two endpoints of one Service sharing an id is
    improbable (2^-32 per pair); should it happen, every id of the Service is
    drawn again with a salt, so they stay distinct and deterministic.
    """
    addresses = sorted({ep.address for ep in endpoints})
    for salt in range(1_000):
        ids = {a: _hash32(f"{a}#{salt}" if salt else a) for a in addresses}
        if len(set(ids.values())) == len(ids):
            return {ep: ids[ep.address] for ep in endpoints}
    raise AssertionError("no collision-free endpoint ids")  # pragma: no cover


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


# --------------------------------------------------------------------- builder


#: One endpoint map per protocol and key space: see _Builder.group().
_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class _Lookup:
    """A key space: service addresses (``daddr . l4proto . dport``) or node ports."""

    prefix: str  # "" or "nodeport-"
    key: str  # the packet expression of the service key
    dispatch: str  # verdict map of the short-circuit targets
    daddr: str  # "ip daddr . " for addresses, "" for node ports

    def slot_key(self, proto: str) -> str:
        """The endpoint-map key without its slot, for packets of ``proto``."""
        return f"{self.daddr}{proto} dport"


class _Builder:
    """Accumulates elements and chains for one family, one Service port at a time."""

    def __init__(self, family: IPFamily, options: RenderOptions) -> None:
        self.family = family
        self.options = options
        self.ipx = "ip6" if family is IPFamily.IPV6 else "ip"
        self.addr = "ipv6_addr" if family is IPFamily.IPV6 else "ipv4_addr"
        self.mark = f"0x{options.masquerade_mark:08x}"
        self.vips = _Lookup(
            "",
            f"{self.ipx} daddr . meta l4proto . th dport",
            "short-circuit-ips",
            f"{self.ipx} daddr . ",
        )
        self.nodeports = _Lookup(
            "nodeport-", "meta l4proto . th dport", "short-circuit-nodeports", ""
        )
        self.local_match = self._detector(negate=False)
        self.not_local_match = self._detector(negate=True)
        # Element text per set/map, first writer wins (see claim()).
        self.elements: dict[str, dict[str, str | None]] = {
            name: {}
            for name in (
                "cluster-ips",
                "nodeport-ips",
                "service-ips",
                "service-nodeports",
                "short-circuit-ips",
                "short-circuit-nodeports",
                *(
                    f"{prefix}{kind}-endpoints-{proto}"
                    for prefix in ("", "nodeport-")
                    for kind in ("cluster", "local")
                    for proto in _PROTOCOLS
                ),
                "no-endpoint-services",
                "no-endpoint-nodeports",
                "firewall-ips",
                "firewall-allow",
                "hairpin-connections",
            )
        }
        self.claimed: set[str] = set()
        self.targets: dict[int, list[str]] = {}
        self.group_chains: dict[str, Chain] = {}
        self.service_chains: dict[str, Chain] = {}
        self.affinity_sets: list[NftSet] = []

    # -- the node's addresses and the local-traffic detector

    def _detector(self, *, negate: bool) -> str | None:
        """nft match for "from a local pod" (or its negation); None without a detector."""
        det = self.options.local_detector
        if not det.enabled(self.family):
            return None
        op = "!= " if negate else ""
        if det.mode in (DetectLocalMode.BRIDGE_INTERFACE, DetectLocalMode.INTERFACE_NAME_PREFIX):
            star = "*" if det.mode is DetectLocalMode.INTERFACE_NAME_PREFIX else ""
            return f'iifname {op}"{det.interface}{star}"'
        cidrs = [str(ipaddress.ip_network(c, strict=False)) for c in det.cidrs_for(self.family)]
        rhs = cidrs[0] if len(cidrs) == 1 else "{ " + ", ".join(cidrs) + " }"
        return f"{self.ipx} saddr {op}{rhs}"

    def nodeport_ips(self) -> list[str]:
        """--nodeport-addresses: empty or "primary" means the node's primary address.

        Upstream's nftables mode defaults to the primary node IP; the node IPs inside
        any CIDRs given are added to it.
        """
        wanted = self.options.nodeport_addresses
        primary = self.options.primary_node_ip(self.family)
        use_primary = primary is not None and (not wanted or "primary" in wanted)
        chosen = [primary] if use_primary and primary is not None else []
        nets = [
            ipaddress.ip_network(c, strict=False)
            for c in wanted
            if c != "primary" and IPFamily.of(c) is self.family
        ]
        for ip in self.options.node_ips_for(self.family):
            addr = ipaddress.ip_address(ip)
            if ip not in chosen and not addr.is_loopback and any(addr in n for n in nets):
                chosen.append(ip)
        return chosen

    # -- elements

    def put(self, name: str, key: str, value: str | None = None) -> None:
        self.elements[name].setdefault(key, value)

    def claim(self, key: str) -> bool:
        """Take a service key (address or node port); False if an earlier port has it."""
        if key in self.claimed:
            return False
        self.claimed.add(key)
        return True

    def put_endpoints(self, name: str, key: str, endpoints: tuple[Endpoint, ...]) -> None:
        """One element per slot of map ``name``: ``key . slot`` to ``ip . port``."""
        # A port's endpoint tuples are written once per address it is reachable on:
        # format them once. Keyed by identity (they live on the port until the next
        # add_port clears the cache); hashing the Endpoints would cost more.
        targets = self.targets.get(id(endpoints))
        if targets is None:
            targets = self.targets[id(endpoints)] = [f"{ep.ip} . {ep.port}" for ep in endpoints]
        self.elements[name].update(
            {f"{key} . {slot}": target for slot, target in enumerate(targets)}
        )

    # -- shared chains

    def group(self, lookup: _Lookup, kind: str, n: int) -> str:
        """The shared chain for ``kind`` traffic to a service with ``n`` endpoints."""
        name = f"{lookup.prefix}{kind}-{n}"
        if name in self.group_chains:
            return name
        rules: list[str]
        if kind in ("cluster", "local"):
            # One rule per protocol: "tcp dport" in the key makes nft match TCP only,
            # and the map's data type can say "tcp dport" too (see the module notes).
            rules = [
                f"dnat to {lookup.slot_key(proto)} . numgen random mod {n} "
                f"map @{lookup.prefix}{kind}-endpoints-{proto}"
                for proto in _PROTOCOLS
            ]
        elif kind == "external":
            rules = ["jump mark-for-masquerade", f"goto {self.group(lookup, 'cluster', n)}"]
        else:  # external-local
            rules = self.short_circuits(f"{lookup.key} vmap @{lookup.dispatch}")
            if n:
                rules.append(f"goto {self.group(lookup, 'local', n)}")
        self.group_chains[name] = Chain(name, tuple(rules))
        return name

    def short_circuits(self, to_cluster: str) -> list[str]:
        """Upstream's Local-policy exceptions: pods and the node use every endpoint."""
        rules = []
        if self.local_match is not None:
            rules.append(f'{self.local_match} {to_cluster} comment "short-circuit pod traffic"')
        rules.append(
            'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"'
        )
        rules.append(f'fib saddr type local {to_cluster} comment "short-circuit local traffic"')
        return rules

    # -- one service port

    def add_port(self, port: ServicePort) -> None:
        self.targets.clear()
        proto = port.protocol.lower()
        cluster_ip = port.cluster_ip(self.family)
        assert cluster_ip is not None  # for_family() keeps only ports with one
        has_any = port.has_any_endpoints
        no_endpoints = "drop" if has_any else _REJECT
        internal = port.local_endpoints if port.internal_policy_local else port.cluster_endpoints
        external = port.local_endpoints if port.external_policy_local else port.cluster_endpoints
        affinity = _Affinity(self, port) if port.session_affinity and has_any else None

        # Every node-local endpoint this port can send to may hairpin, whichever
        # policy selected it (local_endpoints is empty unless a Local policy applies).
        for ep in (*port.cluster_endpoints, *port.local_endpoints):
            if ep.is_local:
                self.put("hairpin-connections", f"{ep.ip} . {ep.ip} . {proto} . {ep.port}")

        self.put("cluster-ips", cluster_ip)
        key = f"{cluster_ip} . {proto} . {port.port}"
        if self.claim(key):
            if has_any and internal:
                if affinity is not None:
                    target = affinity.policy_chain(local=port.internal_policy_local)
                else:
                    kind = "local" if port.internal_policy_local else "cluster"
                    target = self.group(self.vips, kind, len(internal))
                    self.put_endpoints(
                        f"{kind}-endpoints-{proto}", f"{cluster_ip} . {port.port}", internal
                    )
                self.put("service-ips", key, f"goto {target}")
            else:
                self.put("no-endpoint-services", key, no_endpoints)

        lb_ips = [i.ip for i in port.load_balancer_ingress if i.ip_mode is IPMode.VIP]
        for ip in dict.fromkeys([*port.external_ips, *lb_ips]):
            key = f"{ip} . {proto} . {port.port}"
            if not self.claim(key):
                continue
            if has_any:
                chain = self.external(self.vips, port, key, f"{ip} . {port.port}", affinity)
                if chain is not None:
                    self.put("service-ips", key, f"goto {chain}")
            if not (has_any and external):
                self.put("no-endpoint-services", key, no_endpoints)
            if ip in lb_ips and port.load_balancer_source_ranges:
                self.firewall(port, key, lb_ips)

        if port.node_port is not None:
            key = f"{proto} . {port.node_port}"
            if self.claim(f"nodeport {key}"):
                if has_any:
                    chain = self.external(self.nodeports, port, key, str(port.node_port), affinity)
                    if chain is not None:
                        self.put("service-nodeports", key, f"goto {chain}")
                if not (has_any and external):
                    self.put("no-endpoint-nodeports", key, no_endpoints)

    def external(
        self,
        lookup: _Lookup,
        port: ServicePort,
        key: str,
        slot_key: str,
        affinity: _Affinity | None,
    ) -> str | None:
        """The chain for external traffic to ``key``; its endpoint elements as a side effect.

        ``slot_key`` is the key's spelling in the endpoint maps (no protocol: each
        protocol has its own map). None when there is nothing to send the traffic
        to (then the "no endpoints" maps drop it).
        """
        if affinity is not None:
            return affinity.external_chain()
        cluster, local = port.cluster_endpoints, port.local_endpoints
        maps = f"{lookup.prefix}{{}}-endpoints-{port.protocol.lower()}"
        if not port.external_policy_local:
            if not cluster:
                return None
            self.put_endpoints(maps.format("cluster"), slot_key, cluster)
            return self.group(lookup, "external", len(cluster))
        if cluster:
            self.put(lookup.dispatch, key, f"goto {self.group(lookup, 'cluster', len(cluster))}")
            self.put_endpoints(maps.format("cluster"), slot_key, cluster)
        self.put_endpoints(maps.format("local"), slot_key, local)
        return self.group(lookup, "external-local", len(local))

    def firewall(self, port: ServicePort, key: str, lb_ips: list[str]) -> None:
        """loadBalancerSourceRanges for one load-balancer address."""
        self.put("firewall-ips", key)
        nets = [ipaddress.ip_network(c, strict=False) for c in port.load_balancer_source_ranges]
        nodes = self.options.node_ips_for(self.family)
        # Upstream: when the node's (primary) address may connect, so may the
        # load-balancer addresses, which a node can see as its own source address.
        if nodes and any(ipaddress.ip_address(nodes[0]) in n for n in nets):
            nets += [ipaddress.ip_network(ip) for ip in lb_ips]
        # Interval sets refuse overlapping elements: merge them first.
        for net in ipaddress.collapse_addresses(nets):  # type: ignore[type-var]
            # A single address is spelled as one, the way nft lists it.
            text = str(net.network_address) if net.num_addresses == 1 else str(net)
            self.put("firewall-allow", f"{key} . {text}")

    # -- the table

    def finish(self) -> Ruleset:
        for ip in self.nodeport_ips():
            self.put("nodeport-ips", ip)
        return Ruleset(
            family=self.ipx,
            table=TABLE,
            chains=(
                *self.static_chains(),
                *sorted(self.group_chains.values(), key=_group_order),
                *self.service_chains.values(),
            ),
            sets=(*self.static_sets(), *self.affinity_sets),
            comment="rules for kube-proxy",
        )

    def static_sets(self) -> list[NftSet]:
        ipx, addr = self.ipx, self.addr
        vip = f"{addr} . inet_proto . inet_service"
        nodeport = "inet_proto . inet_service"

        def make(name: str, key: str, data: str | None, comment: str) -> NftSet:
            elements = frozen_elements(self.elements[name])
            typeof = "-endpoints-" in name
            flags = ("interval",) if name == "firewall-allow" else ()
            return NftSet(name, key, data, typeof, flags, None, comment, elements)

        endpoint_maps = [
            make(
                f"{lookup.prefix}{kind}-endpoints-{proto}",
                f"{lookup.slot_key(proto)} . numgen random mod 1",
                f"{ipx} daddr . {proto} dport",
                f"{what} endpoints by {by} and slot",
            )
            for lookup, by in ((self.vips, "service address, port"), (self.nodeports, "node port"))
            for kind, what in (("cluster", "cluster-policy"), ("local", "node-local"))
            for proto in _PROTOCOLS
        ]

        return [
            make("cluster-ips", addr, None, "Active ClusterIPs"),
            make("nodeport-ips", addr, None, "IPs that accept NodePort traffic"),
            make("service-ips", vip, "verdict", "ClusterIP, ExternalIP and LoadBalancer traffic"),
            make("service-nodeports", nodeport, "verdict", "NodePort traffic"),
            make("short-circuit-ips", vip, "verdict", "Local policy: pod and node traffic"),
            make("short-circuit-nodeports", nodeport, "verdict", "the same for node ports"),
            *endpoint_maps,
            make(
                "no-endpoint-services",
                vip,
                "verdict",
                "vmap to drop or reject packets to services with no endpoints",
            ),
            make(
                "no-endpoint-nodeports",
                nodeport,
                "verdict",
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
            make(
                "firewall-ips",
                vip,
                None,
                "destinations that are subject to LoadBalancerSourceRanges",
            ),
            make(
                "firewall-allow",
                f"{vip} . {addr}",
                None,
                "sources allowed by LoadBalancerSourceRanges",
            ),
            make(
                "hairpin-connections",
                f"{addr} . {addr} . inet_proto . inet_service",
                None,
                "service hairpin connections",
            ),
        ]

    def static_chains(self) -> list[Chain]:
        ipx, mark = self.ipx, self.mark
        key = f"{ipx} daddr . meta l4proto . th dport"

        def base(name: str, type_: str, hook: str, prio: int, *rules: str) -> Chain:
            return Chain(name, rules, BaseChain(type_, hook, prio))

        services = [f"{key} vmap @service-ips"]
        if self.options.masquerade_all:
            services.insert(0, f"{ipx} daddr @cluster-ips jump mark-for-masquerade")
        elif self.not_local_match is not None:
            services.insert(
                0,
                f"{ipx} daddr @cluster-ips {self.not_local_match} jump mark-for-masquerade "
                'comment "masquerade clusterIP traffic from outside cluster"',
            )
        services.append(
            f"{ipx} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
        )
        new = "ct state new jump"
        return [
            base(
                "filter-prerouting-pre-dnat",
                "filter",
                "prerouting",
                _PRE_DNAT,
                f"{new} firewall-check",
            ),
            base("filter-output-pre-dnat", "filter", "output", _PRE_DNAT, f"{new} firewall-check"),
            base("nat-prerouting", "nat", "prerouting", _DSTNAT, "jump services"),
            base("nat-output", "nat", "output", _DSTNAT, "jump services"),
            base(
                "filter-input",
                "filter",
                "input",
                _FILTER,
                f"{new} nodeport-endpoints-check",
                f"{new} service-endpoints-check",
            ),
            base(
                "filter-forward",
                "filter",
                "forward",
                _FILTER,
                f"{new} service-endpoints-check",
                f"{new} cluster-ips-check",
            ),
            base(
                "filter-output",
                "filter",
                "output",
                _FILTER,
                f"{new} service-endpoints-check",
                f"{new} cluster-ips-check",
            ),
            base("nat-postrouting", "nat", "postrouting", _SRCNAT, "jump masquerading"),
            Chain(
                "firewall-check",
                (f"{key} @firewall-ips {key} . {ipx} saddr != @firewall-allow drop",),
            ),
            Chain("services", tuple(services)),
            Chain("service-endpoints-check", (f"{key} vmap @no-endpoint-services",)),
            Chain(
                "nodeport-endpoints-check",
                (f"{ipx} daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",),
            ),
            Chain(
                "cluster-ips-check",
                (
                    f"{ipx} daddr @cluster-ips reject "
                    'comment "Reject traffic to invalid ports of ClusterIPs"',
                ),
            ),
            Chain(
                "reject-chain",
                ("reject",),
                comment="helper for @no-endpoint-services / @no-endpoint-nodeports",
            ),
            Chain("mark-for-masquerade", (f"meta mark set meta mark | {mark}",)),
            Chain(
                "masquerading",
                (
                    f"meta mark & {mark} != 0x00000000 meta mark set meta mark ^ {mark} "
                    "masquerade fully-random",
                    f"ct status dnat {ipx} saddr . {ipx} daddr . meta l4proto . th dport "
                    "@hairpin-connections masquerade fully-random",
                ),
            ),
        ]


def _group_order(chain: Chain) -> tuple[str, int]:
    return group_order(chain.name)


class _Affinity:
    """The chains and set of one Service port with ClientIP affinity.

    Each chain first looks for the client in the affinity set, once per endpoint
    (``saddr . endpoint id``), and otherwise picks an endpoint at random with a
    cascade of ``numgen random mod k == 0`` rules (1/N, then 1/(N-1) of the rest, ...,
    so each endpoint gets exactly 1/N); either way it refreshes or records the
    client's entry and DNATs.
    """

    def __init__(self, builder: _Builder, port: ServicePort) -> None:
        self.b = builder
        self.port = port
        base = service_chain_base(port)
        self.base = base
        self.set_name = f"affinity-{base}"
        self.ids = endpoint_ids((*port.cluster_endpoints, *port.local_endpoints))
        ipx = builder.ipx
        builder.affinity_sets.append(
            NftSet(
                self.set_name,
                f"{ipx} saddr . numgen inc mod 1",
                typeof=True,
                flags=("dynamic", "timeout"),
                timeout=port.affinity_timeout,
                comment=f"ClientIP affinity of {port.name.upstream}",
            )
        )

    def policy_chain(self, *, local: bool) -> str:
        prefix = "local" if local else "service"
        name = f"{prefix}-{self.base}"
        if name not in self.b.service_chains:
            eps = self.port.local_endpoints if local else self.port.cluster_endpoints
            self.b.service_chains[name] = Chain(name, tuple(self._rules(eps)))
        return name

    def _rules(self, endpoints: tuple[Endpoint, ...]) -> list[str]:
        ipx, proto, aff = self.b.ipx, self.port.protocol.lower(), self.set_name
        rules = []
        picks = []
        for ep in endpoints:
            key = f"{ipx} saddr . numgen inc mod 1 offset {self.ids[ep]}"
            dnat = f"meta l4proto {proto} update @{aff} {{ {key} }} dnat to {ep.address}"
            rules.append(f'{key} @{aff} {dnat} comment "{ep.address}"')
            picks.append(dnat)
        n = len(picks)
        for i, dnat in enumerate(picks):
            rules.append(dnat if i == n - 1 else f"numgen random mod {n - i} == 0 {dnat}")
        return rules

    def external_chain(self) -> str | None:
        port, b = self.port, self.b
        name = f"external-{self.base}"
        if name in b.service_chains:
            return name
        rules: list[str] = []
        if not port.external_policy_local:
            if not port.cluster_endpoints:
                return None
            rules = ["jump mark-for-masquerade", f"goto {self.policy_chain(local=False)}"]
        else:
            if port.cluster_endpoints:
                rules = b.short_circuits(f"goto {self.policy_chain(local=False)}")
            if port.local_endpoints:
                rules.append(f"goto {self.policy_chain(local=True)}")
        b.service_chains[name] = Chain(name, tuple(rules))
        return name


# ------------------------------------------------------------- one port at a time


def claim_keys(port: ServicePort, family: IPFamily) -> tuple[str, ...]:
    """The service keys ``port`` asks for in ``family``, in the order the renderer claims them.

    A key is ``address . proto . port`` (ClusterIP, external IP, VIP-mode load-balancer
    IP) or ``nodeport proto . N``. When two ports ask for one key, the first in
    ServiceMap order gets it (see :func:`render`); a renderer that works one port at a
    time decides that from these keys. Empty when the port has no ClusterIP of
    ``family``.
    """
    if port.cluster_ip(family) is None:
        return ()
    return view_claim_keys(port.for_family(family), family)


def view_claim_keys(view: ServicePort, family: IPFamily) -> tuple[str, ...]:
    """:func:`claim_keys` of a port already cut to ``family`` (``for_family``)."""
    proto = view.protocol.lower()
    cluster_ip = view.cluster_ip(family)
    keys = [f"{cluster_ip} . {proto} . {view.port}"]
    lb_ips = [i.ip for i in view.load_balancer_ingress if i.ip_mode is IPMode.VIP]
    keys += [f"{ip} . {proto} . {view.port}" for ip in dict.fromkeys([*view.external_ips, *lb_ips])]
    if view.node_port is not None:
        keys.append(f"nodeport {proto} . {view.node_port}")
    # An external IP equal to the ClusterIP asks once, as add_port's claims do.
    return tuple(dict.fromkeys(keys))


@dataclass(frozen=True)
class PortRules:
    """What one service port contributes to the table, given the service keys it won.

    ``elements`` holds, per set or map, ``(key, value)`` pairs (the value is None in a
    set); ``groups`` names the shared chains (``cluster-N``, ``external-local-N`` ...)
    its elements point at; ``chains`` and ``sets`` are its own (ClientIP affinity only).
    """

    elements: tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]
    groups: frozenset[str]
    chains: tuple[Chain, ...]
    sets: tuple[NftSet, ...]


class PortRenderer:
    """Renders one service port at a time for one family: the unit of an incremental sync.

    :func:`render` builds the whole table in one pass; this renders the same rules a
    port at a time, so that a change to one Service costs work for that Service only.
    The caller says which of the port's :func:`claim_keys` it won; with the winners
    :func:`render` would pick, the union of every port's rules, the shared chains they
    name and :meth:`static` is exactly :func:`render`'s table.
    """

    def __init__(self, options: RenderOptions) -> None:
        self.options = options
        self.family = options.ip_family
        self._builder = _PortBuilder(self.family, options)

    def static(self) -> Ruleset:
        """The table with no service in it: static chains and sets, node-port addresses."""
        return _Builder(self.family, self.options).finish()

    def render(self, port: ServicePort, won: frozenset[str]) -> PortRules:
        """The rules of ``port`` (which must have a ClusterIP of this family)."""
        if port.cluster_ip(self.family) is None:
            raise ValueError(f"{port.name} has no {self.family.value} ClusterIP")
        return self._builder.port_rules(port.for_family(self.family), won)

    def render_view(self, view: ServicePort, won: frozenset[str]) -> PortRules:
        """:meth:`render` of a port already cut to this family (``for_family``)."""
        return self._builder.port_rules(view, won)

    def group(self, name: str) -> Chain:
        """The definition of a shared chain that some rendered port named."""
        return self._builder.group_chains[name]


def group_order(name: str) -> tuple[str, int]:
    """The order :func:`render` lists shared chains in (by kind, then endpoint count)."""
    kind, _, n = name.rpartition("-")
    return kind, int(n)


class _PortBuilder(_Builder):
    """A builder that renders a single port, claiming exactly the keys it is told it won."""

    def __init__(self, family: IPFamily, options: RenderOptions) -> None:
        super().__init__(family, options)
        self._won: frozenset[str] = frozenset()
        self._used: set[str] = set()
        self._targets: dict[str, tuple[str, ...]] = {}

    def claim(self, key: str) -> bool:
        return key in self._won

    def group(self, lookup: _Lookup, kind: str, n: int) -> str:
        name = super().group(lookup, kind, n)
        self._note(name)
        return name

    def _note(self, name: str) -> None:
        """Record a shared chain as used, with the shared chains it jumps to.

        The base builder makes a chain's targets only when it first makes the chain,
        so a later port would not name them otherwise.
        """
        if name in self._used:
            return
        self._used.add(name)
        targets = self._targets.get(name)
        if targets is None:
            targets = self._targets[name] = tuple(
                target
                for rule in self.group_chains[name].rules
                for verb, target in pairwise(rule.split())
                if verb in ("goto", "jump") and target in self.group_chains
            )
        for target in targets:
            self._note(target)

    def port_rules(self, port: ServicePort, won: frozenset[str]) -> PortRules:
        self._won, self._used = won, set()
        self.add_port(port)
        elements = []
        for name, found in self.elements.items():
            if found:
                elements.append((name, tuple(found.items())))
                found.clear()
        rules = PortRules(
            tuple(elements),
            frozenset(self._used),
            tuple(self.service_chains.values()),
            tuple(self.affinity_sets),
        )
        self.service_chains = {}
        self.affinity_sets = []
        return rules
