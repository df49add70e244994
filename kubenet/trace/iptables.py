"""Walk a packet through an iptables plan, as netfilter would.

The tracer reads the plan's own ``iptables-restore`` text and its base-chain jumps,
so it judges exactly what the kernel is given. A packet whose source is a node
address (or loopback) is locally generated and passes nat OUTPUT, filter OUTPUT and
nat POSTROUTING; any other packet arrives and passes nat PREROUTING, then filter
INPUT when its (possibly DNATed) destination is local, or else filter FORWARD and
nat POSTROUTING. Built-in chains hold only the plan's jumps, in the order the kernel
lists them after they are inserted one by one at the top, and their policy is
ACCEPT unless the restore text declares another.

Where the kernel's choice is random or depends on state the packet does not carry,
every outcome is explored: ``-m statistic`` both matches and does not, and ``-m
recent --rcheck`` both finds an affinity entry and does not. The result therefore
lists every endpoint the packet may reach; its verdict is the most permissive one
any branch reaches (DNAT, then ACCEPT, REJECT, DROP), ``masquerade`` says whether
such a branch hit MASQUERADE or carried the masquerade mark (never for a packet
that is dropped or rejected, which nothing sends on), and ``rules`` lists
every rule any branch hit, once, in the order first hit.

Packets are the first of their connection: conntrack state NEW, plus DNAT once a
DNAT rule rewrote them. A packet with no input interface arrived on one no rule
names. Any syntax the tracer does not understand raises :class:`IptablesTraceError`
rather than being skipped, since a skipped match would make the trace lie. The
restore text's structure is checked up front; a chain's rules are parsed (and
checked) when the walk first enters the chain, so tracing one packet through a
ruleset of 10,000 services does not parse the chains it never reaches.

Two things live outside the restore text, and a :class:`Tracer` can be given both:

* ipset contents, for ``-m set --match-set NAME FLAGS``: a membership function
  (:data:`SetMembership`) that answers for one set, the match's ``src``/``dst``
  flags and the packet's header. Without it, a set match is an error.
* an IPVS table (:data:`VirtualServerLookup`), for the IPVS mode's helper rules.
  IPVS hooks in after nat OUTPUT for locally generated packets and after filter
  INPUT for arriving ones, and takes over packets for its virtual services: each
  real server is a branch (rewritten like a DNAT), which then passes filter OUTPUT
  and nat POSTROUTING, as the kernel re-sends IPVS's packets through LOCAL_OUT; a
  virtual service without real servers answers ICMP port unreachable (REJECT).
  ``-m ipvs`` then matches on the virtual service that took the packet. Packets
  are routed, never bridged, so ``-m physdev --physdev-is-in`` (and ``-is-out``,
  ``-is-bridged``) never match.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from kubenet.model import IPFamily
from kubenet.render.iptables import IptablesPlan
from kubenet.trace import Packet, TraceResult, Verdict

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The tables the walk passes, with their built-in chains. Rules in any other table
#: (mangle, raw, ...) would go unseen, so such text is refused.
_BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
#: How deep user-chain jumps may nest before the tracer assumes a loop.
_MAX_DEPTH = 64


class IptablesTraceError(ValueError):
    """The plan holds something the tracer cannot evaluate faithfully."""


@dataclass(frozen=True)
class Header:
    """The header fields a set lookup or an IPVS table sees (protocol in lower case)."""

    src: _IPAddress
    dst: _IPAddress
    protocol: str
    dport: int


#: ``sets(name, flags, header)``: whether the packet is in set ``name`` when each
#: dimension is read from the ``src`` or ``dst`` side as ``flags`` say. Raises
#: KeyError for a set it does not know.
SetMembership = Callable[[str, tuple[str, ...], Header], bool]


@dataclass(frozen=True)
class Interception:
    """IPVS taking a packet for one of its virtual services.

    ``service`` is how the trace lists the virtual service; ``destinations`` are its
    real servers, each as (how the trace lists it, address, port).
    """

    service: str
    destinations: tuple[tuple[str, _IPAddress, int], ...]


#: The IPVS table: the interception for a packet's header, or None when no virtual
#: service has its protocol, destination address and port.
VirtualServerLookup = Callable[[Header], "Interception | None"]


def trace(
    plan: IptablesPlan, packet: Packet, node_ips: tuple[str, ...] | None = None
) -> TraceResult:
    """Walk ``packet`` through ``plan``; ``node_ips`` defaults to the plan's node addresses."""
    return Tracer(plan, node_ips).trace(packet)


class Tracer:
    """A plan ready to trace packets through: parse once, trace many.

    Chains are parsed the first time a packet enters them and kept for later packets.
    """

    def __init__(
        self,
        plan: IptablesPlan,
        node_ips: tuple[str, ...] | None = None,
        *,
        sets: SetMembership | None = None,
        ipvs: VirtualServerLookup | None = None,
    ) -> None:
        self.family = plan.family
        ips = plan.options.node_ips if node_ips is None else node_ips
        local = frozenset(ipaddress.ip_address(ip) for ip in ips)
        self._walker = _Walker(
            _Ruleset.parse(plan), local, plan.options.masquerade_mark, sets=sets, ipvs=ipvs
        )

    def trace(self, packet: Packet) -> TraceResult:
        """Every way ``packet`` may go, folded into one result."""
        if IPFamily.of(packet.src) is not self.family or IPFamily.of(packet.dst) is not self.family:
            raise ValueError(f"packet {packet.src} -> {packet.dst} is not {self.family}")
        start = _Path(
            src=ipaddress.ip_address(packet.src),
            dst=ipaddress.ip_address(packet.dst),
            protocol=packet.protocol.lower(),
            dport=packet.dport,
            iif=packet.iif or "",
        )
        return _result(list(self._walker.packet(start)))


# --- the parsed ruleset ---------------------------------------------------------------


class _Exit(enum.Enum):
    """How a walk through a chain ends."""

    CONTINUE = "continue"  # go on with the next rule (or, leaving a chain, the caller's)
    RETURN = "return"  # a RETURN rule: leave the current chain
    ACCEPT = "accept"  # ACCEPT, or a NAT target: this hook is done with the packet
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True)
class _Path:
    """One way the packet may go: its header fields as rewritten so far, and what it hit."""

    src: _IPAddress
    dst: _IPAddress
    protocol: str
    dport: int
    iif: str
    hook: str = ""
    mark: int = 0
    dnat: str | None = None
    masquerade: bool = False
    rules: tuple[_Rule, ...] = ()
    #: The IPVS virtual service (address, protocol, port) that took the packet.
    ipvs: tuple[_IPAddress, str, int] | None = None

    @property
    def header(self) -> Header:
        return Header(self.src, self.dst, self.protocol, self.dport)


@dataclass(frozen=True, eq=False)
class _Rule:
    """One parsed rule. Identity (not value) equality: two rules may read alike."""

    text: str
    matches: tuple[_Match, ...]
    target: _Target | None


class _Ruleset:
    """The restore text's tables, chains and raw rules, parsed into rules per chain on demand."""

    def __init__(
        self,
        raw: dict[tuple[str, str], list[str]],
        policies: dict[tuple[str, str], str],
        jumps: dict[tuple[str, str], list[_Rule]],
    ) -> None:
        self._raw = raw
        self._policies = policies
        self._jumps = jumps
        self._parsed: dict[tuple[str, str], list[_Rule]] = {}

    @classmethod
    def parse(cls, plan: IptablesPlan) -> _Ruleset:
        raw: dict[tuple[str, str], list[str]] = {}
        policies: dict[tuple[str, str], str] = {}
        table: str | None = None
        chains: dict[str, list[str]] = {}  # the current table's chains, by name
        for lineno, line in enumerate(plan.restore.splitlines(), 1):
            # Rules are nearly every line: file them by chain with as little work as possible.
            text = line if line.startswith("-A ") else line.strip()
            if text.startswith("-A "):
                end = text.find(" ", 3)
                bucket = chains.get(text[3:end] if end > 0 else text[3:])
                if bucket is None:
                    where = f"restore line {lineno} ({text!r})"
                    if table is None:
                        raise IptablesTraceError(f"{where}: outside of a table")
                    chain = text.split()[1]
                    raise IptablesTraceError(f"{where}: chain {chain} was not declared")
                bucket.append(text)
                continue
            if not text or text.startswith("#"):
                continue
            where = f"restore line {lineno} ({text!r})"
            if text.startswith("*"):
                if table is not None:
                    raise IptablesTraceError(f"{where}: table started before COMMIT")
                table = text[1:]
                if table not in _BUILTIN_CHAINS:
                    raise IptablesTraceError(f"{where}: the tracer walks only filter and nat")
                chains = {}
                for chain in _BUILTIN_CHAINS[table]:
                    chains[chain] = raw.setdefault((table, chain), [])
                continue
            if table is None:
                raise IptablesTraceError(f"{where}: outside of a table")
            if text == "COMMIT":
                table, chains = None, {}
            elif text.startswith(":"):
                parts = text[1:].split()
                if len(parts) != 3:
                    raise IptablesTraceError(f"{where}: malformed chain line")
                chain, policy = parts[0], parts[1]
                builtin = chain in _BUILTIN_CHAINS[table]
                if builtin != (policy != "-") or policy not in ("-", "ACCEPT", "DROP"):
                    raise IptablesTraceError(f"{where}: bad policy {policy!r}")
                # A chain line flushes the chain.
                chains[chain] = raw[(table, chain)] = []
                if builtin:
                    policies[(table, chain)] = policy
            elif text.startswith("-X "):
                chain = text.split()[1]
                if raw.pop((table, chain), None) is None:
                    raise IptablesTraceError(f"{where}: deleting undeclared chain {chain}")
                del chains[chain]
            else:
                raise IptablesTraceError(f"{where}: unsupported restore line")
        if table is not None:
            raise IptablesTraceError(f"restore text ends inside table {table} (no COMMIT)")

        jumps: dict[tuple[str, str], list[_Rule]] = {}
        for jump in plan.jumps:
            if jump.chain not in _BUILTIN_CHAINS.get(jump.table, ()):
                raise IptablesTraceError(f"jump {jump}: not a built-in chain")
            # Each jump is inserted at the top, so the last one ends up first.
            jumps.setdefault((jump.table, jump.chain), []).insert(
                0, _parse_rule(str(jump), list(jump.args))
            )
        return cls(raw, policies, jumps)

    def rules(self, table: str, chain: str) -> list[_Rule]:
        """The rules of a chain, built-in jumps first; parsed the first time they are needed."""
        key = (table, chain)
        parsed = self._parsed.get(key)
        if parsed is None:
            builtin = chain in _BUILTIN_CHAINS[table]
            if key not in self._raw and key not in self._jumps and not builtin:
                raise IptablesTraceError(f"jump to chain {chain}, which table {table} lacks")
            parsed = list(self._jumps.get(key, ()))
            parsed.extend(_parse_rule(text, _tokens(text)[2:]) for text in self._raw.get(key, ()))
            self._parsed[key] = parsed
        return parsed

    def policy(self, table: str, chain: str) -> _Exit:
        return _Exit.DROP if self._policies.get((table, chain)) == "DROP" else _Exit.ACCEPT


# --- matches and targets ----------------------------------------------------------------


@dataclass(frozen=True)
class _Match:
    """A match; :meth:`outcomes` says whether it may match (True), may not (False), or both."""

    negate: bool

    def outcomes(self, path: _Path, walker: _Walker) -> tuple[bool, ...]:
        result = self.test(path, walker)
        return (result != self.negate,)

    def test(self, path: _Path, walker: _Walker) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class _Address(_Match):
    source: bool
    network: _IPNetwork

    def test(self, path: _Path, walker: _Walker) -> bool:
        return (path.src if self.source else path.dst) in self.network


@dataclass(frozen=True)
class _Protocol(_Match):
    name: str

    def test(self, path: _Path, walker: _Walker) -> bool:
        return self.name in ("all", path.protocol)


@dataclass(frozen=True)
class _DestinationPort(_Match):
    low: int
    high: int

    def test(self, path: _Path, walker: _Walker) -> bool:
        return self.low <= path.dport <= self.high


@dataclass(frozen=True)
class _Interface(_Match):
    incoming: bool
    name: str

    def test(self, path: _Path, walker: _Walker) -> bool:
        if self.incoming:
            iface = path.iif
        elif path.hook in ("PREROUTING", "INPUT"):
            iface = ""  # not routed yet, or delivered locally: no output interface
        else:
            raise IptablesTraceError("cannot evaluate -o: the packet's output interface is unknown")
        if self.name.endswith("+"):
            return bool(iface) and iface.startswith(self.name[:-1])
        return iface == self.name


@dataclass(frozen=True)
class _AddressType(_Match):
    source: bool

    def test(self, path: _Path, walker: _Walker) -> bool:
        return walker.is_local(path.src if self.source else path.dst)


@dataclass(frozen=True)
class _Random(_Match):
    probability: float

    def outcomes(self, path: _Path, walker: _Walker) -> tuple[bool, ...]:
        possible = []
        if self.probability > 0:
            possible.append(not self.negate)
        if self.probability < 1:
            possible.append(self.negate)
        return tuple(possible)


@dataclass(frozen=True)
class _Recent(_Match):
    check: bool  # --rcheck / --update: depends on earlier connections; --set: always matches

    def outcomes(self, path: _Path, walker: _Walker) -> tuple[bool, ...]:
        if self.check:
            return (True, False)
        return (not self.negate,)


@dataclass(frozen=True)
class _Mark(_Match):
    value: int
    mask: int

    def test(self, path: _Path, walker: _Walker) -> bool:
        return path.mark & self.mask == self.value


_CT_STATES = frozenset({"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT"})


@dataclass(frozen=True)
class _ConntrackState(_Match):
    states: frozenset[str]

    def test(self, path: _Path, walker: _Walker) -> bool:
        current = {"NEW", "DNAT"} if path.dnat is not None else {"NEW"}
        return bool(self.states & current)


_SET_FLAGS = frozenset({"src", "dst"})
#: ipset's limit on the dimensions of a set match.
_MAX_SET_DIMENSIONS = 6


@dataclass(frozen=True)
class _SetMatch(_Match):
    name: str
    flags: tuple[str, ...]

    def test(self, path: _Path, walker: _Walker) -> bool:
        return walker.in_set(self.name, self.flags, path)


@dataclass(frozen=True)
class _Bridged(_Match):
    """``-m physdev --physdev-is-in/-is-out/-is-bridged``: the tracer's packets are routed."""

    def test(self, path: _Path, walker: _Walker) -> bool:
        return False


@dataclass(frozen=True)
class _Ipvs(_Match):
    """``-m ipvs``, as xt_ipvs evaluates it: each option may be negated on its own.

    Each option is (value, negated) or None when not given; ``ipvs`` is whether
    ``--ipvs`` is negated, or None when not given.
    """

    ipvs: bool | None  # None: --ipvs not given; else whether it is negated
    vaddr: tuple[_IPNetwork, bool] | None = None
    vproto: tuple[str, bool] | None = None
    vport: tuple[int, bool] | None = None

    def test(self, path: _Path, walker: _Walker) -> bool:
        others = (self.vaddr, self.vproto, self.vport)
        if path.ipvs is None:
            # Not IPVS traffic: only a lone "! --ipvs" holds.
            return self.ipvs is True and others == (None, None, None)
        if self.ipvs is True:
            return False
        vaddr, vproto, vport = path.ipvs
        if self.vaddr is not None and (vaddr in self.vaddr[0]) == self.vaddr[1]:
            return False
        if self.vproto is not None and (vproto == self.vproto[0]) == self.vproto[1]:
            return False
        return self.vport is None or (vport == self.vport[0]) != self.vport[1]


@dataclass(frozen=True)
class _Target:
    """What a matching rule does; the base class covers the verdict targets."""

    name: str


@dataclass(frozen=True)
class _Jump(_Target):
    pass


@dataclass(frozen=True)
class _DNAT(_Target):
    ip: _IPAddress
    port: int | None


@dataclass(frozen=True)
class _SetMark(_Target):
    #: new mark = (mark & and_mask) ^ xor_value: covers --or/--xor/--and/--set(-x)mark.
    and_mask: int
    xor_value: int


# --- parsing -----------------------------------------------------------------------------

#: Options each match module takes, and how many arguments each option has.
_MODULE_OPTIONS: dict[str, dict[str, int]] = {
    "comment": {"--comment": 1},
    "tcp": {"--dport": 1, "--destination-port": 1},
    "udp": {"--dport": 1, "--destination-port": 1},
    "sctp": {"--dport": 1, "--destination-port": 1},
    "addrtype": {"--src-type": 1, "--dst-type": 1},
    "statistic": {"--mode": 1, "--probability": 1},
    "recent": {
        "--name": 1,
        "--rcheck": 0,
        "--update": 0,
        "--set": 0,
        "--seconds": 1,
        "--reap": 0,
        "--rsource": 0,
        "--mask": 1,
    },
    "mark": {"--mark": 1},
    "conntrack": {"--ctstate": 1},
    "set": {"--match-set": 2},
    "physdev": {"--physdev-is-in": 0, "--physdev-is-out": 0, "--physdev-is-bridged": 0},
    "ipvs": {"--ipvs": 0, "--vaddr": 1, "--vproto": 1, "--vport": 1},
}
_TARGET_OPTIONS: dict[str, dict[str, int]] = {
    "ACCEPT": {},
    "DROP": {},
    "RETURN": {},
    "REJECT": {"--reject-with": 1},
    "DNAT": {"--to-destination": 1},
    "MASQUERADE": {"--random-fully": 0, "--random": 0},
    "MARK": {"--or-mark": 1, "--xor-mark": 1, "--and-mark": 1, "--set-mark": 1, "--set-xmark": 1},
}
_ADDRESS_OPTIONS = {"-s": True, "--source": True, "--src": True}
_ADDRESS_OPTIONS.update({"-d": False, "--destination": False, "--dst": False})
_INTERFACE_OPTIONS = {"-i": True, "--in-interface": True, "-o": False, "--out-interface": False}


@dataclass
class _Module:
    """One ``-m`` instance and the options given to it, before validation."""

    name: str
    options: list[tuple[str, list[str], bool]]


def _parse_rule(text: str, args: list[str]) -> _Rule:
    """Parse a rule's arguments (everything after ``-A CHAIN``)."""
    try:
        return _parse_args(text, args)
    except (IndexError, ValueError) as err:
        if isinstance(err, IptablesTraceError):
            raise IptablesTraceError(f"{text!r}: {err}") from None
        raise IptablesTraceError(f"{text!r}: malformed ({err or 'missing argument'})") from None


def _parse_args(text: str, args: list[str]) -> _Rule:
    matches: list[_Match] = []
    modules: list[_Module] = []
    target: _Target | None = None
    negate = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "!":
            if negate:
                raise IptablesTraceError("double negation")
            negate = True
            i += 1
            continue
        if arg in _ADDRESS_OPTIONS:
            network = ipaddress.ip_network(args[i + 1], strict=False)
            matches.append(_Address(negate, _ADDRESS_OPTIONS[arg], network))
            i += 2
        elif arg in ("-p", "--protocol"):
            proto = args[i + 1].lower()
            if proto not in ("tcp", "udp", "sctp", "all"):
                raise IptablesTraceError(f"unsupported protocol {proto!r}")
            matches.append(_Protocol(negate, proto))
            if proto != "all":
                # -p loads the protocol's match module implicitly, as iptables does.
                modules.append(_Module(proto, []))
            i += 2
        elif arg in _INTERFACE_OPTIONS:
            matches.append(_Interface(negate, _INTERFACE_OPTIONS[arg], args[i + 1]))
            i += 2
        elif arg in ("-m", "--match"):
            if negate:
                raise IptablesTraceError("'!' before -m")
            name = args[i + 1]
            if name not in _MODULE_OPTIONS:
                raise IptablesTraceError(f"unsupported match module {name!r}")
            modules.append(_Module(name, []))
            i += 2
        elif arg in ("-j", "--jump"):
            if negate:
                raise IptablesTraceError("'!' before -j")
            target = _parse_target(args[i + 1], args[i + 2 :])
            break
        elif arg.startswith("--"):
            module = next((m for m in reversed(modules) if arg in _MODULE_OPTIONS[m.name]), None)
            if module is None:
                raise IptablesTraceError(f"unsupported option {arg!r}")
            arity = _MODULE_OPTIONS[module.name][arg]
            module.options.append((arg, args[i + 1 : i + 1 + arity], negate))
            if len(module.options[-1][1]) != arity:
                raise IptablesTraceError(f"{arg} needs {arity} argument(s)")
            i += 1 + arity
        else:
            raise IptablesTraceError(f"unsupported argument {arg!r}")
        negate = False
    if negate:
        raise IptablesTraceError("dangling '!'")
    for module in modules:
        matches.extend(_module_matches(module))
    return _Rule(text, tuple(matches), target)


def _module_matches(module: _Module) -> list[_Match]:
    """Validate one module's options and turn them into matches."""
    opts = {option: (values, negate) for option, values, negate in module.options}
    if len(opts) != len(module.options):
        raise IptablesTraceError(f"an option of -m {module.name} is repeated")
    name = module.name
    if name == "comment":
        return []
    if name in ("tcp", "udp", "sctp"):
        out: list[_Match] = []
        for values, negate in opts.values():
            low, _, high = values[0].partition(":")
            out.append(_DestinationPort(negate, int(low), int(high or low)))
        return out
    if name == "addrtype":
        out = []
        for option, (values, negate) in opts.items():
            if values[0] != "LOCAL":
                raise IptablesTraceError(f"addrtype {values[0]} is not supported (only LOCAL)")
            out.append(_AddressType(negate, option == "--src-type"))
        return out
    if name == "statistic":
        mode = opts.get("--mode", ([""], False))[0][0]
        if mode != "random" or "--probability" not in opts:
            raise IptablesTraceError("only -m statistic --mode random --probability P is supported")
        values, negate = opts["--probability"]
        return [_Random(negate, float(values[0]))]
    if name == "recent":
        actions = [a for a in ("--rcheck", "--update", "--set") if a in opts]
        if len(actions) != 1 or "--name" not in opts:
            raise IptablesTraceError("-m recent needs --name and one of --rcheck/--update/--set")
        return [_Recent(opts[actions[0]][1], actions[0] != "--set")]
    if name == "mark":
        values, negate = opts["--mark"]
        value, mask = _mark_value(values[0])
        return [_Mark(negate, value, mask)]
    if name == "conntrack":
        values, negate = opts["--ctstate"]
        states = frozenset(values[0].split(","))
        if not states <= _CT_STATES:
            raise IptablesTraceError(f"unknown conntrack state in {values[0]!r}")
        return [_ConntrackState(negate, states)]
    if name == "set":
        (set_name, flag_text), negate = opts["--match-set"]
        flags = tuple(flag_text.split(","))
        if not set(flags) <= _SET_FLAGS or len(flags) > _MAX_SET_DIMENSIONS:
            raise IptablesTraceError(f"bad set match flags {flag_text!r}")
        return [_SetMatch(negate, set_name, flags)]
    if name == "physdev":
        return [_Bridged(negate) for _, negate in opts.values()]
    if name == "ipvs":
        return [_ipvs_match(opts)]
    raise IptablesTraceError(f"unsupported match module {name!r}")


def _ipvs_match(opts: dict[str, tuple[list[str], bool]]) -> _Ipvs:
    if not opts:
        raise IptablesTraceError("-m ipvs needs an option")
    vaddr = vproto = vport = None
    if "--vaddr" in opts:
        values, negate = opts["--vaddr"]
        vaddr = (ipaddress.ip_network(values[0], strict=False), negate)
    if "--vproto" in opts:
        values, negate = opts["--vproto"]
        proto = _PROTOCOL_NUMBERS.get(values[0], values[0].lower())
        if proto not in _PROTOCOL_NUMBERS.values():
            raise IptablesTraceError(f"unsupported --vproto {values[0]!r}")
        vproto = (proto, negate)
    if "--vport" in opts:
        values, negate = opts["--vport"]
        vport = (int(values[0]), negate)
    ipvs = opts["--ipvs"][1] if "--ipvs" in opts else None
    return _Ipvs(False, ipvs, vaddr, vproto, vport)


_PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp"}


def _parse_target(name: str, rest: list[str]) -> _Target:
    """Parse ``-j NAME`` and the target's options (all that follows it)."""
    known = _TARGET_OPTIONS.get(name, {})
    opts: dict[str, str] = {}
    i = 0
    while i < len(rest):
        option = rest[i]
        if option not in known:
            raise IptablesTraceError(f"unsupported option {option!r} for -j {name}")
        arity = known[option]
        opts[option] = rest[i + 1] if arity else ""
        i += 1 + arity
    if name == "DNAT":
        return _parse_dnat(opts.get("--to-destination", ""))
    if name == "MARK":
        if len(opts) != 1:
            raise IptablesTraceError("-j MARK needs exactly one mark option")
        [(option, value)] = opts.items()
        v, m = _mark_value(value)
        full = 0xFFFFFFFF
        and_mask, xor_value = {
            "--or-mark": (full & ~v, v),
            "--xor-mark": (full, v),
            "--and-mark": (v, 0),
            "--set-mark": (full & ~m, v) if "/" in value else (0, v),
            "--set-xmark": (full & ~m, v),
        }[option]
        return _SetMark(name, and_mask, xor_value)
    if name in _TARGET_OPTIONS:
        return _Target(name)
    if name.startswith("-") or not name:
        raise IptablesTraceError(f"bad target {name!r}")
    return _Jump(name)


def _parse_dnat(value: str) -> _DNAT:
    if not value:
        raise IptablesTraceError("-j DNAT needs --to-destination")
    if value.startswith("["):
        host, _, port = value[1:].partition("]")
        port = port.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if "-" in host or "-" in port:
        raise IptablesTraceError(f"DNAT ranges are not supported: {value!r}")
    return _DNAT("DNAT", ipaddress.ip_address(host), int(port) if port else None)


def _mark_value(text: str) -> tuple[int, int]:
    value, _, mask = text.partition("/")
    return int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF


def _tokens(line: str) -> list[str]:
    """Split a restore line as iptables-restore does: whitespace, with "double quotes"."""
    if '"' not in line and "\\" not in line:
        return line.split()
    if _TOKEN.sub("", line).strip():
        raise IptablesTraceError(f"unterminated quote in {line!r}")
    return [_UNQUOTE.sub(_unquote, token) for token in _TOKEN.findall(line)]


#: A token: runs of quoted strings, escaped characters and other non-space characters.
_TOKEN = re.compile(r'(?:"(?:\\.|[^"\\])*"|\\.|[^\s"\\])+')
_UNQUOTE = re.compile(r'\\(.)|"')


def _unquote(match: re.Match[str]) -> str:
    return match.group(1) or ""


# --- the walk -----------------------------------------------------------------------------


@dataclass
class _Walker:
    """Runs paths through hooks and chains of one parsed ruleset."""

    ruleset: _Ruleset
    local: frozenset[_IPAddress]
    masq_mark: int
    sets: SetMembership | None = None
    ipvs: VirtualServerLookup | None = None
    #: The pseudo-rules IPVS steps are listed as, one object per text (rules fold by identity).
    _ipvs_rules: dict[str, _Rule] = field(default_factory=dict)

    def in_set(self, name: str, flags: tuple[str, ...], path: _Path) -> bool:
        """``-m set --match-set name flags`` for this path."""
        if self.sets is None:
            raise IptablesTraceError(f"-m set --match-set {name}: no set contents were given")
        try:
            return self.sets(name, flags, path.header)
        except KeyError:
            raise IptablesTraceError(f"-m set --match-set {name}: no such set") from None

    def is_local(self, ip: _IPAddress) -> bool:
        """addrtype LOCAL: the node's addresses and loopback."""
        return ip in self.local or ip.is_loopback

    def packet(self, start: _Path) -> Iterator[tuple[Verdict, _Path]]:
        """Every way the packet may go, each with its final verdict."""
        if self.is_local(start.src):
            # Locally generated: the kernel knows no input interface for it.
            hooks = [("nat", "OUTPUT"), ("filter", "OUTPUT"), ("nat", "POSTROUTING")]
            if self.ipvs is not None:
                hooks.insert(1, ("ipvs", "OUTPUT"))
            yield from self._hooks(replace(start, iif=""), hooks)
            return
        for exit_, path in self._hook("nat", "PREROUTING", start):
            if exit_ in (_Exit.DROP, _Exit.REJECT):
                yield _verdict(exit_), path
            elif self.is_local(path.dst):
                hooks = [("filter", "INPUT")]
                if self.ipvs is not None:
                    hooks.append(("ipvs", "INPUT"))
                yield from self._hooks(path, hooks)
            else:
                yield from self._hooks(path, [("filter", "FORWARD"), ("nat", "POSTROUTING")])

    def _hooks(self, path: _Path, hooks: list[tuple[str, str]]) -> Iterator[tuple[Verdict, _Path]]:
        if not hooks:
            yield (Verdict.DNAT if path.dnat is not None else Verdict.ACCEPT), path
            return
        (table, chain), rest = hooks[0], hooks[1:]
        if table == "ipvs":
            for exit_, after in self._ipvs(path):
                if exit_ is _Exit.REJECT:
                    yield Verdict.REJECT, after
                elif exit_ is _Exit.ACCEPT and chain == "INPUT":
                    # IPVS re-sends what it took through LOCAL_OUT, then POSTROUTING.
                    yield from self._hooks(after, [("filter", "OUTPUT"), ("nat", "POSTROUTING")])
                else:
                    yield from self._hooks(after, rest)
            return
        for exit_, after in self._hook(table, chain, path):
            if exit_ in (_Exit.DROP, _Exit.REJECT):
                yield _verdict(exit_), after
            else:
                yield from self._hooks(after, rest)

    def _ipvs(self, path: _Path) -> Iterator[tuple[_Exit, _Path]]:
        """IPVS: CONTINUE (no virtual service), ACCEPT per real server, or REJECT (none)."""
        assert self.ipvs is not None
        found = self.ipvs(path.header)
        if found is None:
            yield _Exit.CONTINUE, path
            return
        service = self._pseudo_rule(found.service)
        taken = replace(
            path, rules=(*path.rules, service), ipvs=(path.dst, path.protocol, path.dport)
        )
        if not found.destinations:
            yield _Exit.REJECT, taken
        for text, ip, port in found.destinations:
            address = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
            rules = (*taken.rules, self._pseudo_rule(text))
            yield _Exit.ACCEPT, replace(taken, dst=ip, dport=port, dnat=address, rules=rules)

    def _pseudo_rule(self, text: str) -> _Rule:
        rule = self._ipvs_rules.get(text)
        if rule is None:
            rule = self._ipvs_rules[text] = _Rule(text, (), None)
        return rule

    def _hook(self, table: str, chain: str, path: _Path) -> Iterator[tuple[_Exit, _Path]]:
        """A built-in chain: its rules, then its policy."""
        path = replace(path, hook=chain)
        for exit_, after in self._chain(table, self.ruleset.rules(table, chain), 0, path, 0):
            yield (self.ruleset.policy(table, chain) if exit_ is _Exit.CONTINUE else exit_), after

    def _chain(
        self, table: str, rules: list[_Rule], start: int, path: _Path, depth: int
    ) -> Iterator[tuple[_Exit, _Path]]:
        """Walk ``rules`` from ``start``; yields how each branch leaves the chain.

        The path that goes on to the next rule is followed in this loop; only extra
        branches that also go on recurse, so ordinary chains cost no stack depth.
        """
        i = start
        while i < len(rules):
            rule = rules[i]
            going_on: list[_Path] = []
            for matched, branch in self._match(rule, path):
                if not matched:
                    going_on.append(branch)
                    continue
                hit = replace(branch, rules=(*branch.rules, rule))
                for exit_, after in self._apply(table, rule, hit, depth):
                    if exit_ is _Exit.CONTINUE:
                        going_on.append(after)
                    elif exit_ is _Exit.RETURN:
                        yield _Exit.CONTINUE, after
                    else:
                        yield exit_, after
            if not going_on:
                return
            for branch in going_on[:-1]:
                yield from self._chain(table, rules, i + 1, branch, depth)
            path = going_on[-1]
            i += 1
        yield _Exit.CONTINUE, path

    def _match(self, rule: _Rule, path: _Path) -> list[tuple[bool, _Path]]:
        """Whether the rule matches: one answer, or both where the kernel's choice is open.

        The rule may match when every match may, and may not when any match may not.
        The matching branch comes first, so its endpoint is listed first.
        """
        may_miss = False
        for match in rule.matches:
            outcomes = match.outcomes(path, self)
            if True not in outcomes:
                return [(False, path)]
            may_miss = may_miss or False in outcomes
        return [(True, path), (False, path)] if may_miss else [(True, path)]

    def _apply(
        self, table: str, rule: _Rule, path: _Path, depth: int
    ) -> Iterator[tuple[_Exit, _Path]]:
        target = rule.target
        if target is None:
            yield _Exit.CONTINUE, path
        elif isinstance(target, _Jump):
            if depth >= _MAX_DEPTH:
                raise IptablesTraceError(f"chains nest deeper than {_MAX_DEPTH}: a loop?")
            # The called chain's CONTINUE (end or RETURN) resumes this chain.
            yield from self._chain(
                table, self.ruleset.rules(table, target.name), 0, path, depth + 1
            )
        elif isinstance(target, _SetMark):
            mark = (path.mark & target.and_mask) ^ target.xor_value
            masq = path.masquerade or bool(mark & self.masq_mark)
            yield _Exit.CONTINUE, replace(path, mark=mark, masquerade=masq)
        elif isinstance(target, _DNAT):
            if table != "nat":
                raise IptablesTraceError(f"{rule.text!r}: DNAT outside the nat table")
            port = path.dport if target.port is None else target.port
            ip = str(target.ip)
            address = f"[{ip}]:{port}" if target.ip.version == 6 else f"{ip}:{port}"
            yield _Exit.ACCEPT, replace(path, dst=target.ip, dport=port, dnat=address)
        elif target.name == "MASQUERADE":
            yield _Exit.ACCEPT, replace(path, masquerade=True)
        else:
            # RETURN, ACCEPT, DROP, REJECT. RETURN from a built-in chain ends it, and
            # _hook applies the policy; from a user chain it resumes the caller.
            yield _Exit[target.name], path


def _verdict(exit_: _Exit) -> Verdict:
    return Verdict.DROP if exit_ is _Exit.DROP else Verdict.REJECT


def _result(finals: list[tuple[Verdict, _Path]]) -> TraceResult:
    """Fold every path into one result: the most permissive verdict any path reaches."""
    order = [Verdict.DNAT, Verdict.ACCEPT, Verdict.REJECT, Verdict.DROP]
    verdict = min((v for v, _ in finals), key=order.index)
    chosen = [path for v, path in finals if v is verdict]
    endpoints = sorted({path.dnat for path in chosen if path.dnat is not None})
    seen: dict[_Rule, None] = {}
    for _, path in finals:
        for rule in path.rules:
            seen.setdefault(rule, None)
    return TraceResult(
        verdict=verdict,
        endpoints=tuple(endpoints),
        # A dropped or rejected packet never leaves, so nothing masquerades it, even
        # when it carried the mark (the IPVS mode marks before its firewall drops).
        masquerade=verdict in (Verdict.DNAT, Verdict.ACCEPT)
        and any(path.masquerade for path in chosen),
        rules=tuple(rule.text for rule in seen),
    )
