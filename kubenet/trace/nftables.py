"""Trace a packet through an nftables plan, by reading the script the kernel gets.

:func:`trace` parses the plan's ``nft -f`` text (or, with :class:`Tracer`, any script
or ``nft list table`` listing in the subset below) and walks the first packet of a
connection through the table's base chains, hook by hook, the way netfilter does:

- a packet from one of the node's addresses (or loopback) is locally generated: the
  output hooks, then postrouting; when it is addressed (after DNAT) to the node
  itself it loops back and meets the filter chains of prerouting and input too;
- any other packet takes prerouting, then input when (after DNAT) it is addressed to
  the node, otherwise forward and postrouting;
- base chains of one hook run in priority order; a NAT chain runs once per
  connection and direction (destination NAT in prerouting or output, source NAT in
  postrouting or input), so the loopback leg skips them; ``accept`` ends one base
  chain, ``drop`` and ``reject`` end the packet; ``dnat`` and ``masquerade`` end
  their chain and rewrite the packet for the hooks after it.

Where the kernel would choose at random (``numgen random``) or from state the tracer
cannot know (a lookup in a ``dynamic`` set that rules fill, such as the affinity
sets), every possibility is followed. The result merges them: every endpoint some
path DNATs to, masquerade if some path masquerades, and the rules hit along the
paths in the order first met. Paths ending in different verdicts give DNAT if any
path DNATs, else ACCEPT, REJECT, DROP in that order.

Set and map elements are checked against their declared types when the script is
read; exact sets are then looked up by the canonical spelling of the key (the one
nft lists and the renderer writes), interval sets by range.

Anything outside the understood subset raises :class:`NftTraceError` when the
script is read, never later and never silently: matches on ``ip``/``ip6``
``saddr``/``daddr``, ``meta l4proto``, ``th``/``tcp``/``udp``/``sctp`` ``dport``,
``meta mark`` (with ``&``), ``iifname``, ``fib saddr|daddr type``, ``ct state``,
``ct status``, ``numgen random|inc mod N [offset K]`` and concatenations of them,
against constants, prefixes, anonymous or named sets; ``vmap``; ``jump``, ``goto``,
``return``, ``accept``, ``drop``, ``reject``; ``dnat to`` an address or a map
lookup; ``masquerade``; ``meta mark set``; ``update``/``add`` of a set; ``counter``;
``comment``.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeAlias

from kubenet.render.nft_ruleset import (
    NftSet,
    NftSyntaxError,
    Ruleset,
    join_tokens,
    parse_script,
    tokenize,
)
from kubenet.trace import Packet, TraceResult, Verdict

if TYPE_CHECKING:
    from kubenet.render.nftables import NftablesPlan

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Value: TypeAlias = int | str | IPAddress | tuple["Value", ...]


class NftTraceError(ValueError):
    """The script holds something the tracer does not understand."""


def trace(
    plan: NftablesPlan, packet: Packet, node_ips: tuple[str, ...] | None = None
) -> TraceResult:
    """Walk ``packet`` through ``plan``; ``node_ips`` defaults to the plan's node."""
    ips = plan.options.node_ips if node_ips is None else node_ips
    return Tracer(plan.text, ips).trace(packet)


# ----------------------------------------------------------------- value types

# Each expression has a type that says how constants compared with it are read.
ADDR, PROTO, PORT, INT, IFNAME, FIBTYPE, CTSTATE, CTSTATUS = (
    "addr",
    "proto",
    "port",
    "int",
    "ifname",
    "fibtype",
    "ctstate",
    "ctstatus",
)
_TYPE_NAMES = {
    "ipv4_addr": ADDR,
    "ipv6_addr": ADDR,
    "inet_proto": PROTO,
    "inet_service": PORT,
    "integer": INT,
    "mark": INT,
}
_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
_PROTOCOL_NAMES = {v: k for k, v in _PROTOCOLS.items()}
_ORDERED = (ADDR, PORT, INT)


def _constant(kind: str, tok: str) -> Value:
    """One constant of a type, as nft spells it."""
    try:
        if kind == ADDR:
            return ipaddress.ip_address(tok)
        if kind == PROTO:
            return tok if tok in _PROTOCOLS else _PROTOCOL_NAMES[int(tok)]
        if kind in (PORT, INT):
            return int(tok, 0)
        if kind == IFNAME:
            return tok[1:-1] if tok.startswith('"') else tok
        if kind in (FIBTYPE, CTSTATE, CTSTATUS):
            return tok
    except (ValueError, KeyError):
        pass
    raise NftTraceError(f"{tok!r} is not a valid {kind}")


@dataclass(frozen=True)
class _Pattern:
    """What a constant on the right of a match accepts: a value, a range, a glob."""

    lo: Value
    hi: Value
    glob: bool = False

    def accepts(self, value: Value) -> bool:
        if self.glob:
            return isinstance(value, str) and value.startswith(str(self.lo))
        if self.lo == self.hi:
            return value == self.lo
        return type(value) is type(self.lo) and self.lo <= value <= self.hi  # type: ignore[operator]


def _pattern(kind: str, tok: str) -> _Pattern:
    """A constant, ``a/len`` prefix, ``a-b`` range or ``name*`` interface glob."""
    if kind == ADDR and "/" in tok:
        try:
            net = ipaddress.ip_network(tok, strict=False)
        except ValueError:
            raise NftTraceError(f"{tok!r} is not a valid prefix") from None
        return _Pattern(net.network_address, net.broadcast_address)
    if kind in _ORDERED and "-" in tok.lstrip("-"):
        lo, hi = tok.split("-", 1)
        return _Pattern(_constant(kind, lo), _constant(kind, hi))
    value = _constant(kind, tok)
    if kind == IFNAME and isinstance(value, str) and value.endswith("*"):
        return _Pattern(value[:-1], value[:-1], glob=True)
    return _Pattern(value, value)


# ------------------------------------------------------------------- the world


@dataclass(frozen=True)
class _World:
    """One possible history of the packet so far."""

    saddr: IPAddress
    daddr: IPAddress
    proto: str
    dport: int
    #: Input interface; None on the output path, where iifname matches nothing.
    iif: str | None
    mark: int = 0
    endpoint: tuple[IPAddress, int] | None = None
    masquerade: bool = False
    hits: tuple[str, ...] = ()

    def hit(self, chain: str, text: str) -> _World:
        return replace(self, hits=(*self.hits, f"{chain}: {text}"))


class _Flow(enum.Enum):
    NEXT = "next"  # go on with the next rule
    RETURN = "return"  # leave the current chain
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


_TERMINAL = (_Flow.ACCEPT, _Flow.DROP, _Flow.REJECT)
Outcome = tuple[_World, _Flow]


@dataclass(frozen=True)
class _Env:
    """What expressions may consult besides the packet."""

    local_ips: frozenset[IPAddress]
    sets: dict[str, _SetView]


# ----------------------------------------------------------------- expressions


class _Expr:
    kind: str | tuple[str, ...]

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        """Every value the expression may take; None when it cannot be evaluated."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Field(_Expr):
    name: str
    kind: str

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        n = self.name
        if n == "saddr":
            return [w.saddr]
        if n == "daddr":
            return [w.daddr]
        if n == "l4proto":
            return [w.proto]
        if n == "dport":
            return [w.dport]
        if n == "mark":
            return [w.mark]
        if n == "iifname":
            return None if w.iif is None else [w.iif]
        if n == "fib saddr":
            return ["local" if w.saddr in env.local_ips else "unicast"]
        if n == "fib daddr":
            return ["local" if w.daddr in env.local_ips else "unicast"]
        if n == "ct state":
            return ["new"]  # the tracer follows the first packet of a connection
        if n == "ct status":
            return ["dnat"] if w.endpoint is not None else ["none"]
        raise AssertionError(n)


@dataclass(frozen=True)
class _L4Port(_Expr):
    """``tcp dport`` and friends: the port, only for packets of that protocol."""

    proto: str
    kind: str = PORT

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        return [w.dport] if w.proto == self.proto else None


@dataclass(frozen=True)
class _Numgen(_Expr):
    mod: int
    offset: int
    kind: str = INT

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        return [self.offset + i for i in range(self.mod)]


@dataclass(frozen=True)
class _And(_Expr):
    inner: _Expr
    mask: int
    kind: str = INT

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        vals = self.inner.values(w, env)
        return None if vals is None else [int(v) & self.mask for v in vals]  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Concat(_Expr):
    parts: tuple[_Expr, ...]
    kind: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", tuple(str(p.kind) for p in self.parts))

    def values(self, w: _World, env: _Env) -> list[Value] | None:
        each = [p.values(w, env) for p in self.parts]
        if any(v is None for v in each):
            return None
        return [tuple(combo) for combo in itertools.product(*each)]  # type: ignore[arg-type]


def _kinds(expr: _Expr) -> tuple[str, ...]:
    return expr.kind if isinstance(expr.kind, tuple) else (expr.kind,)


# -------------------------------------------------------------------- set data


# The canonical spelling of each kind of element part, which is how both the
# renderer and ``nft list`` write them. Big exact sets are checked against these
# and then looked up by text, which keeps reading a 10k-Service plan fast.
_SPELLING = {
    "ipv4": r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    "ipv6": r"[0-9a-f]*:[0-9a-f:.]*",
    PROTO: "|".join(_PROTOCOLS),
    PORT: r"(?:0|[1-9]\d{0,4})",
    INT: r"(?:0|[1-9]\d*)",
}


def _spelling(kind: str, family: str) -> str | None:
    if kind == ADDR:
        return _SPELLING["ipv6" if family == "ip6" else "ipv4"]
    return _SPELLING.get(kind)


@dataclass
class _SetView:
    """A named set or map, read with the types of its declaration.

    Interval sets are read into typed patterns. Other sets keep their element text
    (checked to be canonical once) and are looked up by spelling the key; map data
    is read when an element is found.
    """

    decl: NftSet
    key_kinds: tuple[str, ...]
    data_kinds: tuple[str, ...] | None
    verdicts: bool
    read_data: Callable[[str], object]
    ranged: list[tuple[tuple[_Pattern, ...], object]] | None = None
    data: dict[str, object] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        """Rules may add elements the script does not list (upstream's affinity sets)."""
        return "dynamic" in self.decl.flags

    def lookup(self, key: Value) -> tuple[bool, object]:
        parts = key if isinstance(key, tuple) else (key,)
        if self.ranged is not None:
            for patterns, data in self.ranged:
                if all(p.accepts(v) for p, v in zip(patterns, parts, strict=True)):
                    return True, data
            return False, None
        # str() of every part type is its canonical spelling (RFC 5952 for IPv6).
        text = " . ".join(map(str, parts))
        if text not in self.decl.elements:
            return False, None
        value = self.decl.elements[text]
        if value is None:
            return True, None
        if value not in self.data:
            self.data[value] = self.read_data(value)
        return True, self.data[value]


# ------------------------------------------------------------------ statements


@dataclass(frozen=True)
class _Match:
    """``expr [op] rhs``: rhs is patterns (a constant or an anonymous set) or @set."""

    expr: _Expr
    negate: bool
    patterns: tuple[tuple[_Pattern, ...], ...] = ()
    set_name: str | None = None

    def outcomes(self, w: _World, env: _Env) -> set[bool]:
        vals = self.expr.values(w, env)
        if vals is None:
            return {False}  # the expression breaks: the rule does not match either way
        out: set[bool] = set()
        for v in vals:
            if self.set_name is not None:
                view = env.sets[self.set_name]
                found, _ = view.lookup(v)
                possible = {True, False} if view.dynamic and not found else {found}
            else:
                parts = v if isinstance(v, tuple) else (v,)
                possible = {
                    any(
                        all(p.accepts(x) for p, x in zip(pat, parts, strict=True))
                        for pat in self.patterns
                    )
                }
            out |= {found != self.negate for found in possible}
        return out


@dataclass(frozen=True)
class _Verdict:
    word: str  # accept, drop, reject, return, jump, goto
    target: str | None = None


@dataclass(frozen=True)
class _Vmap:
    expr: _Expr
    set_name: str | None
    anonymous: tuple[tuple[tuple[_Pattern, ...], _Verdict], ...] = ()


@dataclass(frozen=True)
class _Dnat:
    #: A fixed destination, or a map lookup.
    fixed: tuple[IPAddress, int | None] | None = None
    expr: _Expr | None = None
    set_name: str | None = None


@dataclass(frozen=True)
class _MarkSet:
    op: str  # "=", "|", "^", "&"
    value: int


@dataclass(frozen=True)
class _Masquerade:
    pass


@dataclass(frozen=True)
class _NoOp:
    """counter, comment, and set updates (the tracer keeps no set state)."""

    what: str


#: The value types of a set's key, and of its data (None for sets and verdict maps).
_Kinds: TypeAlias = tuple[tuple[str, ...], tuple[str, ...] | None]
_Item: TypeAlias = _Match | _Verdict | _Vmap | _Dnat | _MarkSet | _Masquerade | _NoOp


@dataclass(frozen=True)
class _Rule:
    text: str
    items: tuple[_Item, ...]


# ---------------------------------------------------------------- rule parsing


#: Words that start an expression and need the next one to say which.
_PREFIXES = ("ip", "ip6", "meta", "ct", "fib", "th", "tcp", "udp", "sctp", "numgen")


class _RuleParser:
    """Recursive descent over one rule's tokens (or a typeof / element text)."""

    def __init__(self, text: str, family: str, sets: dict[str, _Kinds], chains: set[str]):
        self.text = text
        self.toks = [t for t in tokenize(text) if t != "\n"]
        self.i = 0
        self.family = family
        self.sets = sets
        self.chains = chains

    def fail(self, why: str) -> NftTraceError:
        return NftTraceError(f"{why} in nft rule {self.text!r}")

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        self.i += 1
        return tok

    def expect(self, want: str) -> None:
        got = self.take()
        if got != want:
            raise self.fail(f"expected {want!r}, got {got!r}")

    # -- expressions

    def primary(self) -> _Expr:
        tok = self.take()
        nxt = self.peek()
        if tok in ("ip", "ip6") and nxt in ("saddr", "daddr"):
            if tok != self.family:
                raise self.fail(f"{tok} match in an {self.family} table")
            self.i += 1
            return _Field(nxt, ADDR)
        if tok == "meta" and nxt in ("l4proto", "mark", "iifname"):
            self.i += 1
            return self.meta(nxt)
        if tok in ("mark", "iifname"):
            return self.meta(tok)
        if tok == "th" and nxt == "dport":
            self.i += 1
            return _Field("dport", PORT)
        if tok in ("tcp", "udp", "sctp") and nxt == "dport":
            self.i += 1
            return _L4Port(tok)
        if tok == "fib" and nxt in ("saddr", "daddr") and self.peek(1) == "type":
            self.i += 2
            return _Field(f"fib {nxt}", FIBTYPE)
        if tok == "ct" and nxt in ("state", "status"):
            self.i += 1
            return _Field(f"ct {nxt}", CTSTATE if nxt == "state" else CTSTATUS)
        if tok == "numgen" and nxt in ("random", "inc"):
            self.i += 1
            self.expect("mod")
            mod = self.integer()
            offset = 0
            if self.peek() == "offset":
                self.i += 1
                offset = self.integer()
            if mod < 1:
                raise self.fail("numgen mod must be at least 1")
            return _Numgen(mod, offset)
        what = f"{tok} {nxt}" if tok in _PREFIXES and nxt is not None else tok
        raise self.fail(f"unknown expression {what!r}")

    def meta(self, key: str) -> _Expr:
        if key == "l4proto":
            return _Field("l4proto", PROTO)
        if key == "iifname":
            return _Field("iifname", IFNAME)
        return _Field("mark", INT)

    def integer(self) -> int:
        tok = self.take()
        try:
            return int(tok, 0)
        except ValueError:
            raise self.fail(f"expected a number, got {tok!r}") from None

    def expression(self) -> _Expr:
        parts = [self.operand()]
        while self.peek() == ".":
            self.i += 1
            parts.append(self.operand())
        return parts[0] if len(parts) == 1 else _Concat(tuple(parts))

    def operand(self) -> _Expr:
        expr = self.primary()
        if self.peek() == "&":
            self.i += 1
            if expr.kind != INT:
                raise self.fail("'&' applies to integers only")
            return _And(expr, self.integer())
        if self.peek() in ("|", "^"):
            raise self.fail(f"unsupported operator {self.peek()!r}")
        return expr

    # -- right-hand sides

    def patterns_for(self, kinds: tuple[str, ...], words: list[str]) -> tuple[_Pattern, ...]:
        parts: list[list[str]] = [[]]
        for w in words:
            if w == ".":
                parts.append([])
            else:
                parts[-1].append(w)
        if len(parts) != len(kinds) or any(len(p) != 1 for p in parts):
            raise self.fail(f"{join_tokens(words)!r} does not fit a key of {len(kinds)} parts")
        return tuple(_pattern(k, p[0]) for k, p in zip(kinds, parts, strict=True))

    def anonymous_set(self, kinds: tuple[str, ...]) -> list[tuple[_Pattern, ...]]:
        self.expect("{")
        out: list[tuple[_Pattern, ...]] = []
        words: list[str] = []
        while True:
            tok = self.take()
            if tok in (",", "}"):
                if words:
                    out.append(self.patterns_for(kinds, words))
                    words = []
                if tok == "}":
                    return out
            else:
                words.append(tok)

    def named(self) -> str:
        tok = self.take()
        if not tok.startswith("@") or tok[1:] not in self.sets:
            raise self.fail(f"unknown set {tok!r}")
        return tok[1:]

    def match_or_lookup(self) -> _Item:
        expr = self.expression()
        kinds = _kinds(expr)
        tok = self.peek()
        if tok == "vmap":
            self.i += 1
            if self.peek() == "{":
                return _Vmap(expr, None, tuple(self.anonymous_vmap(kinds)))
            name = self.named()
            self.check_key(name, kinds)
            return _Vmap(expr, name)
        negate = False
        if tok in ("==", "!="):
            negate = tok == "!="
            self.i += 1
        elif tok in ("<", ">", "<=", ">="):
            raise self.fail(f"unsupported comparison {tok!r}")
        tok = self.peek()
        if tok is None:
            raise self.fail("missing right-hand side")
        if tok.startswith("@"):
            name = self.named()
            self.check_key(name, kinds)
            return _Match(expr, negate, set_name=name)
        if tok == "{":
            return _Match(expr, negate, tuple(self.anonymous_set(kinds)))
        words = [self.take()]
        while self.peek() == "." and len(kinds) > 1:
            words += [self.take(), self.take()]
        if kinds in ((CTSTATE,), (CTSTATUS,)):
            while self.peek() == ",":
                self.i += 1
                words.append(self.take())
            return _Match(expr, negate, tuple((_pattern(kinds[0], w),) for w in words))
        return _Match(expr, negate, (self.patterns_for(kinds, words),))

    def anonymous_vmap(self, kinds: tuple[str, ...]) -> list[tuple[tuple[_Pattern, ...], _Verdict]]:
        self.expect("{")
        out = []
        while True:
            words: list[str] = []
            while self.peek() not in (":", None):
                words.append(self.take())
            self.expect(":")
            verdict = self.verdict()
            out.append((self.patterns_for(kinds, words), verdict))
            tok = self.take()
            if tok == "}":
                return out
            if tok != ",":
                raise self.fail(f"expected ',' or '}}', got {tok!r}")

    def check_key(self, name: str, kinds: tuple[str, ...]) -> None:
        want = self.sets[name][0]
        if want != kinds:
            raise self.fail(f"key of @{name} is {want}, the rule gives {kinds}")

    # -- statements

    def verdict(self) -> _Verdict:
        word = self.take()
        if word in ("jump", "goto"):
            target = self.take()
            if target not in self.chains:
                raise self.fail(f"{word} to unknown chain {target!r}")
            return _Verdict(word, target)
        if word in ("accept", "drop", "return", "reject"):
            return _Verdict(word)
        raise self.fail(f"unknown verdict {word!r}")

    def statement(self) -> _Item | None:
        tok = self.peek()
        if tok in ("jump", "goto", "accept", "drop", "return", "reject"):
            verdict = self.verdict()
            if verdict.word == "reject" and self.peek() == "with":
                raise self.fail("reject with a specific type is not supported")
            return verdict
        if tok == "counter":
            self.i += 1
            if self.peek() == "packets":  # nft list spells the counts out
                for _ in range(4):
                    self.take()
            return _NoOp("counter")
        if tok == "comment":
            self.i += 1
            comment = self.take()
            if not comment.startswith('"'):
                raise self.fail("comment needs a quoted string")
            return _NoOp("comment")
        if tok == "masquerade":
            self.i += 1
            while self.peek() in ("fully-random", "random", "persistent"):
                self.i += 1
            return _Masquerade()
        if tok == "dnat":
            return self.dnat()
        if tok in ("update", "add") and (self.peek(1) or "").startswith("@"):
            self.i += 1
            name = self.named()
            self.expect("{")
            expr = self.expression()
            self.check_key(name, _kinds(expr))
            self.expect("}")
            return _NoOp(f"update @{name}")
        if tok in ("meta", "mark") and "set" in (self.peek(1), self.peek(2)):
            return self.mark_set()
        return None

    def dnat(self) -> _Dnat:
        self.expect("dnat")
        if self.peek() in ("ip", "ip6") and self.peek(1) == "to" and self.take() != self.family:
            raise self.fail("dnat of another family")
        self.expect("to")
        tok = self.peek() or ""
        if tok[:1].isdigit() or tok.startswith("[") or ":" in tok:
            self.i += 1
            return _Dnat(fixed=self.address_port(tok))
        expr = self.expression()
        self.expect("map")
        name = self.named()
        self.check_key(name, _kinds(expr))
        data = self.sets[name][1]
        if data != (ADDR, PORT):
            raise self.fail(f"@{name} does not map to address . port")
        return _Dnat(expr=expr, set_name=name)

    def address_port(self, tok: str) -> tuple[IPAddress, int | None]:
        if tok.startswith("["):
            addr, _, port = tok[1:].partition("]")
            port = port.removeprefix(":")
        elif tok.count(":") == 1:
            addr, _, port = tok.partition(":")
        else:
            addr, port = tok, ""
        value = _constant(ADDR, addr)
        assert not isinstance(value, (int, str, tuple))
        return value, int(port) if port else None

    def mark_set(self) -> _MarkSet:
        if self.take() == "meta":
            self.expect("mark")
        self.expect("set")
        if self.peek() in ("meta", "mark"):
            if self.take() == "meta":
                self.expect("mark")
            op = self.take()
            if op not in ("|", "^", "&"):
                raise self.fail(f"unsupported mark operator {op!r}")
            return _MarkSet(op, self.integer())
        return _MarkSet("=", self.integer())

    def rule(self) -> _Rule:
        items: list[_Item] = []
        while self.peek() is not None:
            item = self.statement()
            items.append(item if item is not None else self.match_or_lookup())
            if isinstance(item, _Verdict) and self.peek() not in (None, "comment"):
                raise self.fail(f"{item.word} must end the rule")
        return _Rule(self.text, tuple(items))


def _set_kinds(decl: NftSet, family: str) -> _Kinds:
    """The value types of a set's key and data, from ``type`` names or ``typeof``."""

    def read(text: str) -> tuple[str, ...]:
        if decl.typeof:
            parser = _RuleParser(text, family, {}, set())
            expr = parser.expression()
            if parser.peek() is not None:
                raise NftTraceError(f"bad typeof {text!r} of set {decl.name!r}")
            return _kinds(expr)
        kinds = []
        for word in text.split(" . "):
            if word not in _TYPE_NAMES:
                raise NftTraceError(f"unknown type {word!r} of set {decl.name!r}")
            kinds.append(_TYPE_NAMES[word])
        return tuple(kinds)

    key = read(decl.key)
    if decl.data is None or decl.data == "verdict":
        return key, None
    return key, read(decl.data)


# ---------------------------------------------------------------------- tracer


_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")


@dataclass(frozen=True)
class _Base:
    name: str
    type: str
    hook: str
    priority: int


class Tracer:
    """A parsed script, ready to trace packets through (parse once, trace many)."""

    def __init__(self, script: str, node_ips: Iterable[str]) -> None:
        try:
            ruleset = parse_script(script)
        except NftSyntaxError as err:
            raise NftTraceError(str(err)) from err
        if ruleset.family not in ("ip", "ip6"):
            raise NftTraceError(f"cannot trace a {ruleset.family} table")
        self.family = ruleset.family
        addrs = {ipaddress.ip_address(ip) for ip in node_ips}
        addrs |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        self.chains_named = {c.name for c in ruleset.chains}
        self.env = _Env(frozenset(addrs), self._read_sets(ruleset))
        kinds = {s.name: _set_kinds(s, self.family) for s in ruleset.sets}
        names = self.chains_named
        self.chains: dict[str, tuple[_Rule, ...]] = {
            c.name: tuple(_RuleParser(r, self.family, kinds, names).rule() for r in c.rules)
            for c in ruleset.chains
        }
        bases = []
        for c in ruleset.chains:
            if c.base is None:
                continue
            if c.base.hook not in _HOOKS or c.base.type not in ("filter", "nat"):
                raise NftTraceError(f"cannot trace base chain {c.name!r} ({c.base.spec()})")
            if c.base.policy not in ("accept", "drop"):
                raise NftTraceError(f"unknown policy {c.base.policy!r} of {c.name!r}")
            bases.append(_Base(c.name, c.base.type, c.base.hook, c.base.priority))
        self.policies = {c.name: c.base.policy for c in ruleset.chains if c.base is not None}
        self.hooks = {
            hook: sorted((b for b in bases if b.hook == hook), key=lambda b: b.priority)
            for hook in _HOOKS
        }

    def _read_sets(self, ruleset: Ruleset) -> dict[str, _SetView]:
        views = {}
        chains = {c.name for c in ruleset.chains}
        for decl in ruleset.sets:
            key_kinds, data_kinds = _set_kinds(decl, self.family)
            parser = _RuleParser("", self.family, {}, chains)
            verdicts = decl.data == "verdict"

            def read_data(
                text: str,
                p: _RuleParser = parser,
                verdicts: bool = verdicts,
                kinds: tuple[str, ...] | None = data_kinds,
            ) -> object:
                p.text, p.toks, p.i = text, text.split(), 0
                if verdicts:
                    verdict = p.verdict()
                    if p.peek() is not None:
                        raise p.fail("trailing words after a verdict")
                    return verdict
                assert kinds is not None
                return tuple(pat.lo for pat in p.patterns_for(kinds, text.split()))

            view = _SetView(decl, key_kinds, data_kinds, verdicts, read_data)
            if "interval" in decl.flags:
                view.ranged = []
                for key, value in decl.elements.items():
                    parser.text = key
                    patterns = parser.patterns_for(key_kinds, key.split())
                    view.ranged.append((patterns, None if value is None else read_data(value)))
            else:
                self._check_spelling(view)
            views[decl.name] = view
        return views

    def _check_spelling(self, view: _SetView) -> None:
        """Refuse elements of an exact set that are not canonical text of its types."""
        parts = [_spelling(k, self.family) for k in view.key_kinds]
        if not view.decl.elements:
            return
        if any(p is None for p in parts):
            raise NftTraceError(f"cannot look up elements of set {view.decl.name!r}")
        key_re = re.compile(r" \. ".join(f"(?:{p})" for p in parts))
        data_re = None
        if view.verdicts:
            data_re = re.compile(r"(?:goto|jump) (\S+)|accept|drop|return|reject")
        elif view.data_kinds is not None:
            data_parts = [_spelling(k, self.family) for k in view.data_kinds]
            data_re = re.compile(r" \. ".join(f"(?:{p})" for p in data_parts))
        v6 = [i for i, k in enumerate(view.key_kinds) if k == ADDR and self.family == "ip6"]
        canonical: dict[str, bool] = {}
        for key, value in view.decl.elements.items():
            if key_re.fullmatch(key) is None:
                raise NftTraceError(f"element {key!r} of {view.decl.name!r} does not fit its type")
            for i in v6:
                addr = key.split(" . ")[i]
                if addr not in canonical:
                    canonical[addr] = ipaddress.ip_address(addr).compressed == addr
                if not canonical[addr]:
                    raise NftTraceError(
                        f"element {key!r} of {view.decl.name!r}: write {addr} the way nft lists it"
                    )
            if value is None or data_re is None:
                continue
            m = data_re.fullmatch(value)
            if m is None or (view.verdicts and m.group(1) and m.group(1) not in self.chains_named):
                raise NftTraceError(f"element {key} : {value} of {view.decl.name!r} is not valid")

    # -- walking

    def trace(self, packet: Packet) -> TraceResult:
        src = ipaddress.ip_address(packet.src)
        dst = ipaddress.ip_address(packet.dst)
        if (src.version, dst.version) != ((6, 6) if self.family == "ip6" else (4, 4)):
            raise NftTraceError(f"a packet of another family cannot cross an {self.family} table")
        local = src in self.env.local_ips
        start = _World(
            saddr=src,
            daddr=dst,
            proto=packet.protocol.lower(),
            dport=packet.dport,
            iif=None if local else (packet.iif or ""),
        )
        ends: list[Outcome] = []
        for w, flow in self._path(start, local):
            ends.append((w, flow))
        return _merge(ends)

    def _path(self, w: _World, local: bool) -> list[Outcome]:
        if local:
            out = self._hooks(w, ["output", "postrouting"], nat=True)
            done = []
            for world, flow in out:
                if flow is _Flow.ACCEPT and world.daddr in self.env.local_ips:
                    # Delivered over loopback: the filter chains of prerouting and
                    # input see it again; its NAT was settled on the way out.
                    done += self._hooks(world, ["prerouting", "input"], nat=False)
                else:
                    done.append((world, flow))
            return done
        done = []
        for world, flow in self._hooks(w, ["prerouting"], nat=True):
            if flow is not _Flow.ACCEPT:
                done.append((world, flow))
            elif world.daddr in self.env.local_ips:
                done += self._hooks(world, ["input"], nat=True)
            else:
                done += self._hooks(world, ["forward", "postrouting"], nat=True)
        return done

    def _hooks(self, w: _World, hooks: Sequence[str], *, nat: bool) -> list[Outcome]:
        worlds = [w]
        ended: list[Outcome] = []
        for hook in hooks:
            for base in self.hooks[hook]:
                if base.type == "nat" and not nat:
                    continue
                nxt = []
                for world in worlds:
                    for w2, flow in self._chain(world, base.name, 0):
                        if flow in (_Flow.DROP, _Flow.REJECT):
                            ended.append((w2, flow))
                        elif flow is _Flow.ACCEPT or self.policies[base.name] == "accept":
                            nxt.append(w2)
                        else:
                            ended.append((w2, _Flow.DROP))
                worlds = nxt
        return ended + [(world, _Flow.ACCEPT) for world in worlds]

    def _chain(self, w: _World, name: str, depth: int) -> list[Outcome]:
        if depth > 32:
            raise NftTraceError(f"jumps nest deeper than 32 at chain {name!r}")
        rules = self.chains[name]
        out: list[Outcome] = []
        todo: list[tuple[_World, int]] = [(w, 0)]
        while todo:
            world, i = todo.pop(0)
            if i == len(rules):
                out.append((world, _Flow.NEXT))
                continue
            for w2, flow in self._rule(world, name, rules[i], depth):
                if flow is _Flow.NEXT:
                    todo.append((w2, i + 1))
                else:
                    out.append((w2, flow))
        return out

    def _rule(self, w: _World, chain: str, rule: _Rule, depth: int) -> list[Outcome]:
        """Run one rule's items in order, branching where the kernel could go either way."""
        out: list[Outcome] = []

        def step(world: _World, k: int, hit: bool) -> None:
            if k == len(rule.items):
                out.append((world if hit else world.hit(chain, rule.text), _Flow.NEXT))
                return
            item = rule.items[k]
            if isinstance(item, _Match):
                for ok in sorted(item.outcomes(world, self.env)):
                    if ok:
                        step(world, k + 1, hit)
                    else:  # statements before the failed match have had their effect
                        out.append((world, _Flow.NEXT))
                return
            if not hit and not isinstance(item, (_Vmap, _Dnat)):
                world, hit = world.hit(chain, rule.text), True
            if isinstance(item, _NoOp):
                step(world, k + 1, hit)
            elif isinstance(item, _MarkSet):
                step(replace(world, mark=_apply_mark(world.mark, item)), k + 1, hit)
            elif isinstance(item, _Verdict):
                out.extend(self._verdict(world, item, depth))
            elif isinstance(item, _Masquerade):
                out.append((replace(world, masquerade=True), _Flow.ACCEPT))
            elif isinstance(item, _Vmap):
                self._vmap(world, item, chain, rule, depth, out)
            else:
                self._dnat(world, item, chain, rule, out)

        step(w, 0, False)
        return out

    def _verdict(self, w: _World, v: _Verdict, depth: int) -> list[Outcome]:
        if v.word in ("accept", "drop", "reject"):
            return [(w, _Flow(v.word))]
        if v.word == "return":
            return [(w, _Flow.RETURN)]
        assert v.target is not None
        out = []
        for w2, flow in self._chain(w, v.target, depth + 1):
            if flow in _TERMINAL:
                out.append((w2, flow))
            elif v.word == "jump":
                out.append((w2, _Flow.NEXT))
            else:  # the end of a goto target returns from the chain that went there
                out.append((w2, _Flow.RETURN))
        return out

    def _vmap(
        self, w: _World, item: _Vmap, chain: str, rule: _Rule, depth: int, out: list[Outcome]
    ) -> None:
        keys = item.expr.values(w, self.env)
        if keys is None:
            out.append((w, _Flow.NEXT))
            return
        for key in keys:
            verdict: object = None
            if item.set_name is not None:
                found, verdict = self.env.sets[item.set_name].lookup(key)
            else:
                parts = key if isinstance(key, tuple) else (key,)
                found = False
                for pats, v in item.anonymous:
                    if all(p.accepts(x) for p, x in zip(pats, parts, strict=True)):
                        found, verdict = True, v
                        break
            if not found:
                out.append((w, _Flow.NEXT))
                continue
            assert isinstance(verdict, _Verdict)
            out.extend(self._verdict(w.hit(chain, rule.text), verdict, depth))

    def _dnat(self, w: _World, item: _Dnat, chain: str, rule: _Rule, out: list[Outcome]) -> None:
        targets: list[tuple[IPAddress, int | None]] = []
        if item.fixed is not None:
            targets.append(item.fixed)
        else:
            assert item.expr is not None and item.set_name is not None
            view = self.env.sets[item.set_name]
            keys = item.expr.values(w, self.env)
            if keys is None:  # e.g. "tcp dport" of a UDP packet: the rule does not match
                out.append((w, _Flow.NEXT))
                return
            for key in keys:
                found, data = view.lookup(key)
                if not found:
                    out.append((w, _Flow.NEXT))  # no mapping: the rule breaks
                    continue
                assert isinstance(data, tuple)
                targets.append((data[0], data[1]))
        for addr, port in targets:
            hit = w.hit(chain, rule.text)
            dport = w.dport if port is None else port
            done = replace(hit, daddr=addr, dport=dport, endpoint=(addr, dport))
            out.append((done, _Flow.ACCEPT))


def _apply_mark(mark: int, op: _MarkSet) -> int:
    if op.op == "|":
        return mark | op.value
    if op.op == "^":
        return mark ^ op.value
    if op.op == "&":
        return mark & op.value
    return op.value


def _endpoint_text(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


_PREFERENCE = (Verdict.DNAT, Verdict.ACCEPT, Verdict.REJECT, Verdict.DROP)


def _merge(ends: list[Outcome]) -> TraceResult:
    """One result from every path the packet may take."""
    by_verdict: dict[Verdict, list[_World]] = {}
    for w, flow in ends:
        if flow is _Flow.DROP:
            verdict = Verdict.DROP
        elif flow is _Flow.REJECT:
            verdict = Verdict.REJECT
        else:
            verdict = Verdict.DNAT if w.endpoint is not None else Verdict.ACCEPT
        by_verdict.setdefault(verdict, []).append(w)
    verdict = next(v for v in _PREFERENCE if v in by_verdict)
    worlds = by_verdict[verdict]
    endpoints = sorted(
        {_endpoint_text(*w.endpoint) for w in worlds if w.endpoint is not None},
    )
    rules = list(dict.fromkeys(r for w, _ in ends for r in w.hits))
    return TraceResult(
        verdict=verdict,
        endpoints=tuple(endpoints),
        masquerade=any(w.masquerade for w in worlds),
        rules=tuple(rules),
    )
