"""Render a ServiceMap as kube-proxy's iptables ruleset, for one IP family.

The layout, chain names, comments and rule order are upstream kube-proxy's
(``pkg/proxy/iptables/proxier.go``), so people's ``iptables-save`` habits carry over:

* nat ``KUBE-SERVICES`` matches each ClusterIP / external IP / load-balancer IP and
  jumps to the service's chains; its last rule hands node-local destinations to
  ``KUBE-NODEPORTS``. ``KUBE-MARK-MASQ`` sets the masquerade bit and
  ``KUBE-POSTROUTING`` masquerades what carries it.
* per service port: ``KUBE-SVC-`` (Cluster-policy endpoints), ``KUBE-SVL-`` (Local),
  ``KUBE-EXT-`` (external destinations), ``KUBE-FW-`` (loadBalancerSourceRanges) and
  one ``KUBE-SEP-`` per endpoint, named by :func:`chain_hash`.
* filter ``KUBE-SERVICES`` / ``KUBE-EXTERNAL-SERVICES`` REJECT (no endpoints at all)
  or DROP (Local policy, no local endpoint); ``KUBE-PROXY-FIREWALL`` drops
  load-balancer traffic the source ranges did not let through; ``KUBE-FORWARD``
  accepts marked and established traffic.

Choices where upstream depends on the host or on flags we do not have:

* ``MASQUERADE --random-fully`` is always emitted. Upstream adds it when iptables
  supports it (iptables >= 1.6.2 on kernels >= 3.14); every system we target does,
  and a pure renderer cannot probe. Fully random source ports avoid the SNAT port
  collisions that drop UDP packets under load.
* NodePorts are not served on loopback addresses, as upstream with
  ``--iptables-localhost-nodeports=false`` and as the nftables backend always does.
  That needs no ``route_localnet`` sysctl (issue 90259). For IPv4 the plan still
  carries kubelet's anti-martian ``KUBE-FIREWALL`` rule, as upstream does by default.
* No health-check-node-port ACCEPT rules: those ports are not this backend's job here.
  The filter ``KUBE-NODEPORTS`` chain and its jump stay, so the layout is upstream's.
* The nfacct counters are left out, as upstream does when they are unavailable.

Everything a service port contributes is a function of that port and a
:class:`RuleContext` (:func:`service_rules`), and the plan records which chains
belong to which port (:attr:`IptablesPlan.chains_by_service`), so a partial sync
only has to rewrite the chains of the ports that changed: :func:`render` with
``changed`` does that, as upstream's partial sync (KEP-3453) does, shared chains
written whole. A :class:`ServiceRulesCache` keeps each port's rules from one render
to the next, so that a full render costs string joins rather than re-rendering every
port; :func:`render_changes` goes further from that cache, for node-proxy's partial
syncs: it looks at the changed ports only, and writes a shared chain only when a
changed port's rules in it changed, so that one endpoint replaced is a restore of a
few chains whatever the size of the cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from kubenet.model import Endpoint, IPFamily, IPMode, ServiceMap, ServicePort, ServicePortName
from kubenet.options import DetectLocalMode, RenderOptions

# Chain names (upstream's constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
#: kubelet's anti-martian chain, which kube-proxy duplicates for IPv4.
KUBE_FIREWALL = "KUBE-FIREWALL"

#: Above this many endpoints upstream drops the per-endpoint comments, which makes
#: the restore input up to 40% smaller ("large cluster mode").
LARGE_CLUSTER_ENDPOINTS = 1000

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: Every 10-bit value spelled as its two base32 characters.
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)

_NODEPORTS_COMMENT = (
    '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
)


@dataclass(frozen=True)
class JumpRule:
    """A jump from a built-in chain into ours, ensured outside ``iptables-restore``.

    Restoring a built-in chain would replace rules other software put there, so
    upstream checks each jump with ``iptables -C`` and inserts it with ``-I`` (at the
    top) when missing. Applied in plan order that way, the kernel ends up listing a
    built-in chain's jumps in reverse plan order; the tracer walks them so.
    """

    table: str
    chain: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"-t {self.table} -I {self.chain} " + " ".join(_quote(a) for a in self.args)


@dataclass(frozen=True)
class IptablesPlan:
    """The rendered ruleset of one family, ready for ``iptables-restore --noflush``."""

    backend: ClassVar[str] = "iptables"
    family: IPFamily
    options: RenderOptions
    #: The exact ``iptables-restore --noflush`` (v4) / ``ip6tables-restore`` (v6) input.
    restore: str
    jumps: tuple[JumpRule, ...]
    #: The nat chains of each service port, in map order; what a partial sync rewrites
    #: and what the next full sync compares against to delete stale chains.
    chains_by_service: tuple[tuple[ServicePortName, tuple[str, ...]], ...] = field(default=())
    #: Whether the rules were written in upstream's large cluster mode (no endpoint
    #: comments): a partial sync must not mix the two spellings.
    large_cluster: bool = False
    #: Whether this is a partial sync (only the chains of changed ports are written).
    partial: bool = False

    @property
    def text(self) -> str:
        """What ``node-proxy render`` prints: the jumps as comments, then the restore input.

        Still valid ``iptables-restore`` input, since ``#`` lines are comments there.
        """
        tool = "iptables" if self.family is IPFamily.IPV4 else "ip6tables"
        head = [f"# Base-chain jumps, ensured with `{tool} -C` / `{tool} -I` after the restore:"]
        head.extend(f"# {jump}" for jump in self.jumps)
        return "\n".join(head) + "\n" + self.restore

    def service_chains(self) -> frozenset[str]:
        """Every per-service nat chain this plan creates."""
        return frozenset(chain for _, chains in self.chains_by_service for chain in chains)


@dataclass(frozen=True)
class ServiceRules:
    """What one service port adds to the ruleset.

    ``filter_rules`` and ``entry_rules`` go into shared chains (filter
    KUBE-SERVICES / KUBE-EXTERNAL-SERVICES / KUBE-PROXY-FIREWALL, nat KUBE-SERVICES /
    KUBE-NODEPORTS), which a full sync rewrites whole; ``chains`` are the port's own
    nat chains and ``chain_rules`` their rules, which a partial sync may skip.
    """

    filter_rules: tuple[str, ...]
    entry_rules: tuple[str, ...]
    chains: tuple[str, ...]
    #: The chains' rules as one block of lines: a large cluster has hundreds of
    #: thousands of them, kept between syncs, and one string per port instead of one
    #: per rule saves the per-object overhead (about 20 MB at 10,000 Services).
    chain_text: str

    @property
    def chain_rules(self) -> tuple[str, ...]:
        return tuple(self.chain_text.split("\n")) if self.chain_text else ()


@dataclass(frozen=True)
class RuleContext:
    """The node-wide inputs of :func:`service_rules`, derived once per render."""

    family: IPFamily
    masquerade_all: bool
    #: Upstream's "large cluster mode": no per-endpoint comments.
    large_cluster: bool
    #: The local detector's "is local" / "is not local" matches, or None when off.
    if_local: str | None
    if_not_local: str | None
    #: The node's primary IP of this family (upstream's nodeIP), for the firewall allowance.
    node_ip: str | None
    #: Memo of statistic probabilities by endpoint count (a render-local cache).
    _probabilities: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, options: RenderOptions, *, large_cluster: bool = False) -> RuleContext:
        family = options.ip_family
        if_local, if_not_local = _local_matches(options, family)
        node_ips = options.node_ips_for(family)
        return cls(
            family=family,
            masquerade_all=options.masquerade_all,
            large_cluster=large_cluster,
            if_local=if_local,
            if_not_local=if_not_local,
            node_ip=node_ips[0] if node_ips else None,
        )

    def probability(self, n: int) -> str:
        """Upstream's ``%0.10f`` of 1/n: the chance the next of n endpoints is picked."""
        text = self._probabilities.get(n)
        if text is None:
            text = self._probabilities[n] = f"{1.0 / n:0.10f}"
        return text


def chain_hash(data: str) -> str:
    """Upstream's 16-character chain suffix: base32 (RFC 4648) of sha256, truncated.

    Service chains hash ``ServicePortName.String() + protocol`` (``ns/svc:port`` +
    ``tcp``), endpoint chains the same plus ``ip:port``. The first 16 base32 characters
    encode exactly the first 80 digest bits; they are spelled two characters (10 bits)
    at a time, which is several times faster than ``base64.b32encode`` and this runs
    once per endpoint.
    """
    n = int.from_bytes(hashlib.sha256(data.encode()).digest()[:10], "big")
    pairs = _B32_PAIRS
    return (
        pairs[n >> 70]
        + pairs[(n >> 60) & 1023]
        + pairs[(n >> 50) & 1023]
        + pairs[(n >> 40) & 1023]
        + pairs[(n >> 30) & 1023]
        + pairs[(n >> 20) & 1023]
        + pairs[(n >> 10) & 1023]
        + pairs[n & 1023]
    )


def service_chain_name(name: ServicePortName, prefix: str = "KUBE-SVC-") -> str:
    """A per-service chain: ``KUBE-SVC-`` / ``KUBE-SVL-`` / ``KUBE-EXT-`` / ``KUBE-FW-``."""
    return prefix + chain_hash(name.upstream + name.protocol.lower())


def endpoint_chain_name(name: ServicePortName, endpoint: Endpoint) -> str:
    """The ``KUBE-SEP-`` chain of one endpoint of a service port."""
    return "KUBE-SEP-" + chain_hash(name.upstream + name.protocol.lower() + endpoint.address)


class ServiceRulesCache:
    """Each port's :class:`ServiceRules` from the last render, reused while nothing changed.

    A port's rules depend on the port and the :class:`RuleContext` only, so they are
    reused when both are the same objects (or equal) as last time. Hand the same cache
    to every render of one family; it holds only ports of the last map rendered.
    """

    def __init__(self) -> None:
        self._ctx: RuleContext | None = None
        self._rules: dict[ServicePortName, tuple[ServicePort, ServiceRules]] = {}
        self._next: dict[ServicePortName, tuple[ServicePort, ServiceRules]] = {}
        self._endpoints = 0

    def begin(self, ctx: RuleContext) -> None:
        if ctx != self._ctx:
            self._rules.clear()
        self._ctx = ctx
        self._next = {}

    def rules(self, port: ServicePort, ctx: RuleContext) -> ServiceRules:
        found = self._rules.get(port.name)
        if found is not None and (found[0] is port or found[0] == port):
            rules = found[1]
        else:
            rules = service_rules(port, ctx)
        self._next[port.name] = (port, rules)
        return rules

    def end(self) -> None:
        self._rules, self._next = self._next, {}
        self._endpoints = sum(len(port.endpoints) for port, _ in self._rules.values())

    # What render_changes needs: the last render's rules, kept up to date port by port.

    @property
    def context(self) -> RuleContext | None:
        return self._ctx

    @property
    def endpoints(self) -> int:
        """Endpoints of every port held (what decides upstream's large cluster mode)."""
        return self._endpoints

    def get(self, name: ServicePortName) -> tuple[ServicePort, ServiceRules] | None:
        return self._rules.get(name)

    def put(self, name: ServicePortName, entry: tuple[ServicePort, ServiceRules] | None) -> None:
        old = self._rules.pop(name, None)
        if old is not None:
            self._endpoints -= len(old[0].endpoints)
        if entry is not None:
            self._rules[name] = entry
            self._endpoints += len(entry[0].endpoints)

    def rules_held(self) -> Iterator[ServiceRules]:
        for _, rules in self._rules.values():
            yield rules

    def chains_by_service(self) -> tuple[tuple[ServicePortName, tuple[str, ...]], ...]:
        return tuple((name, rules.chains) for name, (_, rules) in self._rules.items())


def render(
    service_map: ServiceMap,
    options: RenderOptions,
    *,
    previous: IptablesPlan | None = None,
    changed: Collection[ServicePortName] | None = None,
    cache: ServiceRulesCache | None = None,
) -> IptablesPlan:
    """Render ``service_map`` for ``options.ip_family`` (see :func:`render_parts`)."""
    plan, parts = render_parts(
        service_map, options, previous=previous, changed=changed, cache=cache
    )
    return replace(plan, restore="\n".join(parts))


def render_parts(
    service_map: ServiceMap,
    options: RenderOptions,
    *,
    previous: IptablesPlan | None = None,
    changed: Collection[ServicePortName] | None = None,
    cache: ServiceRulesCache | None = None,
    own_chains: bool = True,
) -> tuple[IptablesPlan, list[str]]:
    """Render ``service_map`` for ``options.ip_family``: the plan without its restore
    text, and the parts that text is made of (joined by newlines).

    A caller that writes a large restore somewhere (node-proxy: to a file the restore
    tool reads) can write the parts one by one, and never hold the whole text: 36 MB
    at 10,000 Services, on top of the rules cache the parts come from.

    With ``previous`` (the plan last applied), nat chains it created that this plan
    no longer has are flushed and deleted (``-X``), as upstream's full sync does.

    With ``changed`` too, a partial sync: the filter chains and the shared nat chains
    are written whole, but of the per-service chains only those of the ports named in
    ``changed`` (which may include ports that are gone); the chains of every other
    port are neither declared nor written, so ``--noflush`` leaves them as the
    previous sync made them. Render with ``previous`` and ``changed`` only when
    ``previous`` was applied and nothing but those ports has changed since, with the
    same options; if the large cluster mode flips, the plan is a full sync anyway.

    Without ``own_chains`` no port's own chains are written at all: the shared chains,
    the filter table and the deletions only (the last restore of :func:`render_batched`).
    """
    family = options.ip_family
    if previous is not None and previous.family is not family:
        raise ValueError(f"previous plan is {previous.family}, rendering {family}")
    ports = service_map.for_family(family).ports
    total_endpoints = sum(len(port.endpoints) for port in ports)
    large = total_endpoints > LARGE_CLUSTER_ENDPOINTS
    ctx = RuleContext.of(options, large_cluster=large)
    partial = changed is not None and previous is not None and previous.large_cluster == large
    rewrite = frozenset(changed or ()) if partial else None
    if cache is not None:
        cache.begin(ctx)
    mark = f"{options.masquerade_mark:#010x}"  # Go's %#08x pads the digits to 8: 0x00004000
    is_v4 = family is IPFamily.IPV4

    filter_chains = [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_FORWARD,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ]
    filter_rules: list[str] = []
    if is_v4:
        filter_chains.append(KUBE_FIREWALL)
        filter_rules.append(
            f'-A {KUBE_FIREWALL} -m comment --comment "block incoming localnet connections"'
            " -d 127.0.0.0/8 ! -s 127.0.0.0/8"
            " -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        )
    nat_chains = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]
    nat_rules = [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
        # Clear the mark, so a packet that traverses the stack again is not masqueraded twice.
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
        _mark_masq_rule(mark),
    ]

    chains_by_service: list[tuple[ServicePortName, tuple[str, ...]]] = []
    for port in ports:
        rules = cache.rules(port, ctx) if cache is not None else service_rules(port, ctx)
        filter_rules.extend(rules.filter_rules)
        nat_rules.extend(rules.entry_rules)
        if own_chains and (rewrite is None or port.name in rewrite):
            nat_chains.extend(rules.chains)
            if rules.chain_text:
                nat_rules.append(rules.chain_text)
        chains_by_service.append((port.name, rules.chains))
    if cache is not None:
        cache.end()

    nat_rules.extend(_nodeport_entry_rules(options))

    if previous is not None:
        current = {chain for _, chains in chains_by_service for chain in chains}
        # Declaring a chain flushes it; only then may -X delete it.
        stale = sorted(previous.service_chains() - current)
        nat_chains.extend(stale)
        nat_rules.extend(f"-X {chain}" for chain in stale)

    filter_rules.extend(
        [
            # Drop INVALID packets, which would otherwise reset connections (upstream
            # issues 74839 and 117924); skipped upstream only with tcp_be_liberal.
            f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
            # Marked traffic is forwarded even when the FORWARD policy is not ACCEPT.
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules"'
            f" -m mark --mark {mark}/{mark} -j ACCEPT",
            f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule"'
            " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
    )

    out = ["*filter"]
    out.extend(_declarations(filter_chains))
    out.extend(filter_rules)
    out.append("COMMIT")
    out.append("*nat")
    out.extend(_declarations(nat_chains))
    out.extend(nat_rules)
    out.append("COMMIT")
    out.append("")
    plan = IptablesPlan(
        family=family,
        options=options,
        restore="",
        jumps=_jumps(family),
        chains_by_service=tuple(chains_by_service),
        large_cluster=large,
        partial=partial,
    )
    return plan, out


def render_batched(
    service_map: ServiceMap,
    options: RenderOptions,
    *,
    previous: IptablesPlan | None = None,
    cache: ServiceRulesCache | None = None,
    batch: int = 500,
) -> tuple[IptablesPlan, list[list[str]]]:
    """A full sync as several restores (each as its parts): ``batch`` ports' own chains
    at a time, then one restore of the shared chains, the filter table and deletions.

    iptables-nft 1.8.9 loads one large restore in time that grows with the square of
    its size (10,000 Services: four to six minutes here), and the same rules in restores
    of 500 Services in about 15 s. It is safe over existing rules too: each port's own
    chains change together in one restore, and nothing points at a new chain until the
    last restore, which swaps the shared chains (filter and nat) in one transaction per
    table and only then deletes what is no longer used. Until then every Service behaves
    as before the sync, afterwards as after it.
    """
    cache = cache if cache is not None else ServiceRulesCache()
    plan, shared = render_parts(
        service_map, options, previous=previous, cache=cache, own_chains=False
    )
    restores: list[list[str]] = []
    held = list(cache.rules_held())
    for start in range(0, len(held), batch):
        chunk = held[start : start + batch]
        chains = [chain for rules in chunk for chain in rules.chains]
        if not chains:
            continue
        head = []
        if not restores:
            # Endpoint chains jump to it: it must exist (with its rule) from the first.
            chains.append(KUBE_MARK_MASQ)
            head.append(_mark_masq_rule(f"{options.masquerade_mark:#010x}"))
        blocks = [rules.chain_text for rules in chunk if rules.chain_text]
        restores.append(["*nat", *_declarations(chains), *head, *blocks, "COMMIT", ""])
    restores.append(shared)
    return plan, restores


#: The shared chains service ports add rules to: (table, chain).
_SHARED_FILTER = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
_SHARED_NAT = (KUBE_SERVICES, KUBE_NODEPORTS)


def render_changes(
    changes: Mapping[ServicePortName, ServicePort | None],
    options: RenderOptions,
    cache: ServiceRulesCache,
) -> IptablesPlan | None:
    """A partial sync that does not grow with the cluster, from the last render's cache.

    ``cache`` must hold what the kernel holds: the cache of the last render (or of the
    last ``render_changes``) that was applied, with the same ``options``. ``changes``
    maps each changed port to its new state (None: gone). The changed ports' own
    chains are written whole (as upstream's partial sync), chains they no longer use
    are flushed and deleted, and a shared chain (nat ``KUBE-SERVICES``, filter
    ``KUBE-EXTERNAL-SERVICES``, ...) is written only if a changed port's rules in it
    changed: an endpoint replaced writes a handful of chains whatever the cluster's
    size, where upstream rewrites every shared chain on every sync.

    Returns None when a full render is needed instead: the cache is empty or of other
    options, or upstream's large cluster mode flips (every rule's spelling changes).
    The cache is updated only when a plan is returned.
    """
    family = options.ip_family
    ctx = cache.context
    if ctx is None or ctx != RuleContext.of(options, large_cluster=ctx.large_cluster):
        return None
    updates: dict[ServicePortName, tuple[ServicePort, ServiceRules] | None] = {}
    olds: dict[ServicePortName, ServiceRules | None] = {}
    endpoints = cache.endpoints
    for name, port in changes.items():
        cached = cache.get(name)
        view = port.for_family(family) if port is not None else None
        if view is not None and view.cluster_ip(family) is None:
            view = None  # not of this family: like a port that is gone
        if cached is not None:
            endpoints -= len(cached[0].endpoints)
        if view is not None:
            endpoints += len(view.endpoints)
        olds[name] = cached[1] if cached is not None else None
        updates[name] = (view, service_rules(view, ctx)) if view is not None else None
    if (endpoints > LARGE_CLUSTER_ENDPOINTS) != ctx.large_cluster:
        return None

    touched: set[tuple[str, str]] = set()
    own_chains: list[str] = []
    own_rules: list[str] = []
    stale: set[str] = set()
    for name, entry in updates.items():
        old, new = olds[name], entry[1] if entry is not None else None
        old_shared = (old.filter_rules, old.entry_rules) if old is not None else ((), ())
        new_shared = (new.filter_rules, new.entry_rules) if new is not None else ((), ())
        if old_shared != new_shared:
            for table, lines in (("filter", old_shared[0] + new_shared[0]),
                                 ("nat", old_shared[1] + new_shared[1])):  # fmt: skip
                touched.update((table, line.split(" ", 2)[1]) for line in lines)
        if new is not None:
            own_chains.extend(new.chains)
            if new.chain_text:
                own_rules.append(new.chain_text)
        stale.update(old.chains if old is not None else ())
    for name, entry in updates.items():
        cache.put(name, entry)
    stale.difference_update(own_chains)

    filter_chains = [c for c in _SHARED_FILTER if ("filter", c) in touched]
    nat_shared = [c for c in _SHARED_NAT if ("nat", c) in touched]
    filter_rules: list[str] = []
    nat_rules: list[str] = []
    if filter_chains or nat_shared:
        wanted_filter = {f"-A {c} " for c in filter_chains}
        wanted_nat = {f"-A {c} " for c in nat_shared}
        for held in cache.rules_held():
            filter_rules.extend(r for r in held.filter_rules if _prefix(r) in wanted_filter)
            nat_rules.extend(r for r in held.entry_rules if _prefix(r) in wanted_nat)
        if KUBE_SERVICES in nat_shared:
            nat_rules.extend(_nodeport_entry_rules(options))
    nat_rules.extend(own_rules)
    nat_rules.extend(f"-X {chain}" for chain in sorted(stale))

    out = []
    if filter_chains:
        out.append("*filter")
        out.extend(_declarations(filter_chains))
        out.extend(filter_rules)
        out.append("COMMIT")
    nat_chains = nat_shared + own_chains + sorted(stale)
    if nat_chains:
        out.append("*nat")
        out.extend(_declarations(nat_chains))
        out.extend(nat_rules)
        out.append("COMMIT")
    out.append("")
    return IptablesPlan(
        family=family,
        options=options,
        restore="\n".join(out) if len(out) > 1 else "",
        jumps=_jumps(family),
        large_cluster=ctx.large_cluster,
        partial=True,
    )


def _mark_masq_rule(mark: str) -> str:
    return f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}"


def _prefix(rule: str) -> str:
    """``-A CHAIN `` of a rule."""
    return rule[: rule.index(" ", 3) + 1]


def _declarations(chains: list[str]) -> list[str]:
    """Chain declarations in reverse name order.

    The order of declarations means nothing to the kernel, but iptables-nft (1.8.9)
    with --noflush keeps its chain cache in name order and inserts from the head,
    so hashed names declared in random order cost it O(chains^2): 9.3 s for 1k
    Services instead of 2.9 s here. In reverse order every insert is at the head.
    """
    return [f":{chain} - [0:0]" for chain in sorted(chains, reverse=True)]


def service_rules(port: ServicePort, ctx: RuleContext) -> ServiceRules:
    """The rules one service port contributes, following upstream's syncProxyRules.

    ``port`` must be a single-family view (:meth:`ServicePort.for_family`).
    """
    cluster_ip = port.cluster_ip(ctx.family)
    if cluster_ip is None:
        raise ValueError(f"{port.name} has no {ctx.family} ClusterIP")
    name = port.name.upstream
    proto = port.protocol.lower()
    svc_hash = chain_hash(name + proto)
    cluster_chain = "KUBE-SVC-" + svc_hash
    local_chain = "KUBE-SVL-" + svc_hash
    ext_chain = "KUBE-EXT-" + svc_hash
    fw_chain = "KUBE-FW-" + svc_hash
    p = f"-m {proto} -p {proto}"
    svc_dport = port.port

    # Load-balancer IPs with ipMode Proxy are not programmed: the load balancer
    # proxies to the node, so the VIP never arrives here as a destination (KEP-1860).
    lb_vips = [i.ip for i in port.load_balancer_ingress if i.ip_mode is IPMode.VIP]
    accessible = port.node_port is not None or bool(port.external_ips) or bool(lb_vips)
    external_local = accessible and port.external_policy_local
    internal_local = port.internal_policy_local
    # Cluster endpoints are needed for any Cluster policy, and for the short-circuit
    # of pod traffic to external destinations even when externalTrafficPolicy is Local.
    uses_cluster = not internal_local or accessible
    uses_local = internal_local or external_local
    # Endpoints as "ip:port" addresses; ``ips`` keeps the IP of every one this node
    # may reach (cluster and local endpoints overlap).
    ips: dict[str, str] = {}
    cluster_eps = _addresses(port.cluster_endpoints, ips) if uses_cluster else []
    local_eps = _addresses(port.local_endpoints, ips) if uses_local else []
    # "Has endpoints" as upstream's per-family proxier sees it: the cluster endpoints
    # whenever they are used (which also keeps every jump on a chain that exists),
    # else any usable endpoint of this family. The map's has_any_endpoints counts
    # both families, so a dual-stack port would otherwise DROP where upstream REJECTs.
    if uses_cluster:
        has_endpoints = bool(cluster_eps)
    else:
        has_endpoints = any(e.ready or (e.serving and e.terminating) for e in port.endpoints)

    internal_chain = cluster_chain
    has_internal = has_endpoints
    if internal_local:
        internal_chain = local_chain
        has_internal = has_endpoints and bool(local_eps)
    external_policy_chain = cluster_chain
    has_external = has_endpoints
    if external_local:
        external_policy_chain = local_chain
        has_external = has_endpoints and bool(local_eps)
    uses_ext_chain = has_endpoints and accessible
    uses_fw_chain = has_endpoints and bool(lb_vips) and bool(port.load_balancer_source_ranges)
    lb_chain = fw_chain if uses_fw_chain else ext_chain

    internal_target = external_target = ""
    internal_comment = external_comment = ""
    if not has_endpoints:
        internal_target = external_target = "REJECT"
        internal_comment = external_comment = f'"{name} has no endpoints"'
    else:
        if not has_internal:
            internal_target, internal_comment = "DROP", f'"{name} has no local endpoints"'
        if not has_external:
            external_target, external_comment = "DROP", f'"{name} has no local endpoints"'

    filter_rules: list[str] = []
    entry: list[str] = []
    chains: list[str] = []
    rules: list[str] = []
    cluster_match = (
        f'-m comment --comment "{name} cluster IP" {p} -d {cluster_ip} --dport {svc_dport}'
    )

    if has_internal:
        entry.append(f"-A {KUBE_SERVICES} {cluster_match} -j {internal_chain}")
    else:
        filter_rules.append(
            f"-A {KUBE_SERVICES} -m comment --comment {internal_comment}"
            f" {p} -d {cluster_ip} --dport {svc_dport} -j {internal_target}"
        )

    for ip in port.external_ips:
        if has_endpoints:
            entry.append(
                f'-A {KUBE_SERVICES} -m comment --comment "{name} external IP"'
                f" {p} -d {ip} --dport {svc_dport} -j {ext_chain}"
            )
        if not has_external:
            filter_rules.append(
                f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment}"
                f" {p} -d {ip} --dport {svc_dport} -j {external_target}"
            )

    for ip in lb_vips:
        if has_endpoints:
            entry.append(
                f'-A {KUBE_SERVICES} -m comment --comment "{name} loadbalancer IP"'
                f" {p} -d {ip} --dport {svc_dport} -j {lb_chain}"
            )
        if uses_fw_chain:
            filter_rules.append(
                f'-A {KUBE_PROXY_FIREWALL} -m comment --comment "{name} traffic not accepted by'
                f' {fw_chain}" {p} -d {ip} --dport {svc_dport} -j DROP'
            )
    if not has_external:
        filter_rules.extend(
            f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment}"
            f" {p} -d {ip} --dport {svc_dport} -j {external_target}"
            for ip in lb_vips
        )

    if port.node_port is not None:
        if has_endpoints:
            # NodePorts are not subject to loadBalancerSourceRanges (upstream: "for
            # better or for worse ... we can't change that").
            entry.append(
                f"-A {KUBE_NODEPORTS} -m comment --comment {name}"
                f" {p} --dport {port.node_port} -j {ext_chain}"
            )
        if not has_external:
            filter_rules.append(
                f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment}"
                f" -m addrtype --dst-type LOCAL {p} --dport {port.node_port} -j {external_target}"
            )

    if has_internal:
        if ctx.masquerade_all:
            rules.append(f"-A {internal_chain} {cluster_match} -j {KUBE_MARK_MASQ}")
        elif ctx.if_not_local is not None:
            # Masquerade off-cluster traffic to the ClusterIP: someone may route the
            # service range to any node, and the endpoint may be on another node.
            rules.append(
                f"-A {internal_chain} {cluster_match} {ctx.if_not_local} -j {KUBE_MARK_MASQ}"
            )

    if uses_ext_chain:
        chains.append(ext_chain)
        if not external_local:
            # Cluster policy may cross nodes: masquerade so replies come back here.
            rules.append(
                f'-A {ext_chain} -m comment --comment "masquerade traffic for {name}'
                f' external destinations" -j {KUBE_MARK_MASQ}'
            )
        else:
            if ctx.if_local is not None:
                # Pods reaching an external destination of their own cluster are
                # treated as if they went out to the load balancer and came back in:
                # neither traffic policy applies.
                rules.append(
                    f'-A {ext_chain} -m comment --comment "pod traffic for {name} external'
                    f' destinations" {ctx.if_local} -j {cluster_chain}'
                )
            # The node itself picks a local address (maybe the VIP) as source, which
            # would not route back from another node: masquerade, and use every endpoint.
            rules.append(
                f'-A {ext_chain} -m comment --comment "masquerade LOCAL traffic for {name}'
                f' external destinations" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}'
            )
            rules.append(
                f'-A {ext_chain} -m comment --comment "route LOCAL traffic for {name}'
                f' external destinations" -m addrtype --src-type LOCAL -j {cluster_chain}'
            )
        if has_external:
            rules.append(f"-A {ext_chain} -j {external_policy_chain}")

    if uses_fw_chain:
        chains.append(fw_chain)
        fw_head = f'-A {fw_chain} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        node_ip = ipaddress.ip_address(ctx.node_ip) if ctx.node_ip else None
        for cidr in port.load_balancer_source_ranges:
            rules.append(f"{fw_head} -s {cidr} -j {ext_chain}")
            if node_ip is not None and node_ip in ipaddress.ip_network(cidr, strict=False):
                allow_from_node = True
        if allow_from_node:
            # A VIP-like load balancer's IP is often local to the node: a request from
            # the node to it loops back with the VIP as source. Let that through too.
            rules.extend(f"{fw_head} -s {ip} -j {ext_chain}" for ip in lb_vips)
        # Whatever reaches the end was not DNATed; KUBE-PROXY-FIREWALL drops it.
        rules.append(
            f'-A {fw_chain} -m comment --comment "other traffic to {name} will be dropped'
            f' by {KUBE_PROXY_FIREWALL}"'
        )

    sep_names = {address: "KUBE-SEP-" + chain_hash(name + proto + address) for address in ips}
    if cluster_eps:
        chains.append(cluster_chain)
        _endpoint_jumps(rules, ctx, port, name, cluster_chain, cluster_eps, sep_names)
    if local_eps:
        chains.append(local_chain)
        _endpoint_jumps(rules, ctx, port, name, local_chain, local_eps, sep_names)

    comment = "" if ctx.large_cluster else f" -m comment --comment {name}"
    affinity = port.affinity_timeout is not None
    for address in sorted(ips):
        sep = sep_names[address]
        chains.append(sep)
        # Hairpin: a pod reaching itself through the service must see another source.
        rules.append(f"-A {sep}{comment} -s {ips[address]} -j {KUBE_MARK_MASQ}")
        recent = f" -m recent --name {sep} --set" if affinity else ""
        rules.append(f"-A {sep}{comment}{recent} {p} -j DNAT --to-destination {address}")

    return ServiceRules(tuple(filter_rules), tuple(entry), tuple(chains), "\n".join(rules))


def _endpoint_jumps(
    rules: list[str],
    ctx: RuleContext,
    port: ServicePort,
    name: str,
    chain: str,
    endpoints: list[str],
    sep_names: dict[str, str],
) -> None:
    """Affinity checks, then the random pick of one endpoint.

    Upstream's writeServiceToEndpointRules.
    """
    large = ctx.large_cluster
    if port.affinity_timeout is not None:
        for address in endpoints:
            sep = sep_names[address]
            comment = "" if large else f' -m comment --comment "{name} -> {address}"'
            rules.append(
                f"-A {chain}{comment} -m recent --name {sep} --rcheck"
                f" --seconds {port.affinity_timeout} --reap -j {sep}"
            )
    n = len(endpoints)
    for i, address in enumerate(endpoints):
        comment = "" if large else f' -m comment --comment "{name} -> {address}"'
        # Rule i is reached with probability (n-i)/n and matches 1/(n-i) of that: each
        # endpoint gets 1/n. The last rule always matches.
        stat = (
            f" -m statistic --mode random --probability {ctx.probability(n - i)}"
            if i < n - 1
            else ""
        )
        rules.append(f"-A {chain}{comment}{stat} -j {sep_names[address]}")


def _addresses(endpoints: tuple[Endpoint, ...], ips: dict[str, str]) -> list[str]:
    """The endpoints' "ip:port" addresses in upstream's order, noting each one's IP in ``ips``.

    Upstream sorts endpoints by that string, which is not the dataclass order
    ("10.0.0.10:80" sorts before "10.0.0.1:80").
    """
    out = []
    for ep in endpoints:
        address = ep.address
        ips[address] = ep.ip
        out.append(address)
    out.sort()
    return out


def _local_matches(options: RenderOptions, family: IPFamily) -> tuple[str | None, str | None]:
    """The "from a local pod" and "not from a local pod" matches of the local detector."""
    detector = options.local_detector
    if not detector.enabled(family):
        return None, None
    if detector.mode is DetectLocalMode.BRIDGE_INTERFACE:
        return f"-i {detector.interface}", f"! -i {detector.interface}"
    if detector.mode is DetectLocalMode.INTERFACE_NAME_PREFIX:
        return f"-i {detector.interface}+", f"! -i {detector.interface}+"
    cidrs = detector.cidrs_for(family)
    if len(cidrs) > 1:
        # As upstream's config validation: one cluster (or node) CIDR per family.
        raise ValueError(f"{detector.mode} local detection takes one {family} CIDR, got {cidrs}")
    return f"-s {cidrs[0]}", f"! -s {cidrs[0]}"


def nodeport_destinations(options: RenderOptions) -> tuple[str, ...] | None:
    """The node addresses NodePorts answer on; None means every local address.

    ``--nodeport-addresses``: CIDRs of the rendered family select the node IPs inside
    them; the word ``primary`` selects the node's primary IP; no CIDR of the
    family (or a zero-length prefix) means all local addresses, as upstream.
    Loopback addresses are left out: NodePorts are not served on them.
    """
    family = options.ip_family
    wanted = options.nodeport_addresses
    primary = "primary" in wanted
    cidrs = [
        ipaddress.ip_network(c, strict=False)
        for c in wanted
        if c != "primary" and IPFamily.of(c) is family
    ]
    if not primary and (not cidrs or any(c.prefixlen == 0 for c in cidrs)):
        return None
    chosen = set()
    main_ip = options.primary_node_ip(family) if primary else None
    if main_ip is not None:
        chosen.add(ipaddress.ip_address(main_ip))
    for ip_text in options.node_ips_for(family):
        ip = ipaddress.ip_address(ip_text)
        if not ip.is_loopback and any(ip in c for c in cidrs):
            chosen.add(ip)
    return tuple(str(ip) for ip in sorted(chosen))


def _nodeport_entry_rules(options: RenderOptions) -> list[str]:
    """The tail of nat KUBE-SERVICES: hand node-local destinations to KUBE-NODEPORTS."""
    destinations = nodeport_destinations(options)
    if destinations is None:
        loopback = "127.0.0.0/8" if options.ip_family is IPFamily.IPV4 else "::1/128"
        return [
            f"-A {KUBE_SERVICES} -m comment --comment {_NODEPORTS_COMMENT}"
            f" -m addrtype --dst-type LOCAL ! -d {loopback} -j {KUBE_NODEPORTS}"
        ]
    return [
        f"-A {KUBE_SERVICES} -m comment --comment {_NODEPORTS_COMMENT} -d {ip} -j {KUBE_NODEPORTS}"
        for ip in destinations
    ]


def _jump(table: str, chain: str, target: str, comment: str, *extra: str) -> JumpRule:
    args = (*extra, "-m", "comment", "--comment", comment) if comment else extra
    return JumpRule(table, chain, (*args, "-j", target))


def _jumps(family: IPFamily) -> tuple[JumpRule, ...]:
    """Upstream's iptablesJumpChains (and, for IPv4, the kubelet KUBE-FIREWALL jumps)."""
    new = ("-m", "conntrack", "--ctstate", "NEW")
    external = "kubernetes externally-visible service portals"
    portals = "kubernetes service portals"
    firewall = "kubernetes load balancer firewall"
    jumps = [
        _jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES, external, *new),
        _jump("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, external, *new),
        _jump("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
        _jump("filter", "FORWARD", KUBE_SERVICES, portals, *new),
        _jump("filter", "OUTPUT", KUBE_SERVICES, portals, *new),
        _jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
        _jump("filter", "INPUT", KUBE_PROXY_FIREWALL, firewall, *new),
        _jump("filter", "OUTPUT", KUBE_PROXY_FIREWALL, firewall, *new),
        _jump("filter", "FORWARD", KUBE_PROXY_FIREWALL, firewall, *new),
        _jump("nat", "OUTPUT", KUBE_SERVICES, portals),
        _jump("nat", "PREROUTING", KUBE_SERVICES, portals),
        _jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    ]
    if family is IPFamily.IPV4:
        jumps.append(_jump("filter", "INPUT", KUBE_FIREWALL, ""))
        jumps.append(_jump("filter", "OUTPUT", KUBE_FIREWALL, ""))
    return tuple(jumps)


def _quote(arg: str) -> str:
    """Quote an argument the way iptables-save does, when it needs quoting."""
    if arg and not any(c in arg for c in ' \t"\\'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
