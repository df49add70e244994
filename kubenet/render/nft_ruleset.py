"""A structured nftables ruleset: one table of chains, sets and maps, as data.

The nftables renderer builds a :class:`Ruleset`; this module turns it into text
for ``nft -f`` and back:

- :meth:`Ruleset.script` writes the full-replace script (one atomic transaction
  that recreates the table);
- :func:`diff` writes the smaller script that turns one ruleset into another by
  adding and deleting elements, chains and sets, so an endpoint change costs a
  handful of element operations however big the cluster is;
- :func:`parse_script` reads scripts back (ours, and the ``nft list table``
  listing of a loaded table) and replays their commands into a :class:`Ruleset`,
  so tests can check that ``old.script() + diff(old, new)`` is ``new``.

Rules are kept as text, one normalised spelling per rule (tokens separated by one
space, no space before ``,`` or ``;``); what a rule *means* is the tracer's job
(:mod:`kubenet.trace.nftables`). Elements are a read-only mapping from key text to
value text in the spelling nft uses (``10.96.0.10 . tcp . 80`` to ``goto cluster-2``);
a set element's value is ``None``. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

#: nft's named base-chain priorities (the ip and ip6 families).
STANDARD_PRIORITIES = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}


class NftSyntaxError(ValueError):
    """The text uses nft syntax this module does not understand."""


class Element(NamedTuple):
    """One set element (``value`` is None) or map element, as the parser meets it."""

    key: str
    value: str | None = None

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key} : {self.value}"


@dataclass(frozen=True)
class BaseChain:
    """What hooks a base chain into netfilter."""

    type: str
    hook: str
    priority: int
    policy: str = "accept"

    def spec(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy {self.policy};"


@dataclass(frozen=True)
class Chain:
    """A chain and its rules, in order."""

    name: str
    rules: tuple[str, ...] = ()
    base: BaseChain | None = None
    comment: str | None = None

    def same_definition(self, other: Chain) -> bool:
        """Whether a flush and refill turns one into the other.

        Only the hook matters: a regular chain's comment cannot be changed in place
        and is never worth deleting a referenced chain for.
        """
        return self.base == other.base


@dataclass(frozen=True)
class NftSet:
    """A named set, or a map when ``data`` is set.

    ``key`` and ``data`` are nft type expressions (``ipv4_addr . inet_service``) or,
    when ``typeof`` is true, the packet expressions the types are taken from.
    """

    name: str
    key: str
    data: str | None = None
    typeof: bool = False
    flags: tuple[str, ...] = ()
    #: Element timeout in seconds (sets with the ``timeout`` flag).
    timeout: int | None = None
    comment: str | None = None
    #: Key text to value text (None for a set). Equality ignores element order.
    elements: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY, hash=False)

    @property
    def is_map(self) -> bool:
        return self.data is not None

    @property
    def kind(self) -> str:
        return "map" if self.is_map else "set"

    def same_definition(self, other: NftSet) -> bool:
        """Whether only the elements differ."""
        return replace(self, elements=_EMPTY) == replace(other, elements=_EMPTY)

    def declaration(self) -> list[str]:
        """The lines inside ``set NAME { ... }``, elements excluded."""
        word = "typeof" if self.typeof else "type"
        lines = [f"{word} {self.key}" + (f" : {self.data}" if self.data else "")]
        if self.flags:
            lines.append("flags " + ",".join(self.flags))
        if self.timeout is not None:
            lines.append(f"timeout {self.timeout}s")
        if self.comment is not None:
            lines.append(f"comment {quote(self.comment)}")
        return lines


@dataclass(frozen=True)
class Ruleset:
    """One nftables table: its family, name, chains and sets."""

    family: str
    table: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[NftSet, ...] = ()
    comment: str | None = None

    def chain(self, name: str) -> Chain:
        for c in self.chains:
            if c.name == name:
                return c
        raise KeyError(name)

    def set(self, name: str) -> NftSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(name)

    def canonical(self) -> Ruleset:
        """The same content with chains and sets in name order (for comparison)."""
        return replace(
            self,
            chains=tuple(sorted(self.chains, key=lambda c: c.name)),
            sets=tuple(sorted(self.sets, key=lambda s: s.name)),
        )

    def script(self) -> str:
        """The ``nft -f`` script that atomically replaces the table with this one.

        ``add table`` makes sure the ``delete`` has something to delete, so the
        same file works whether or not the table exists; ``nft -f`` runs the whole
        file as one transaction, so no packet ever sees a half-built table.
        """
        t = f"{self.family} {self.table}"
        out = [f"add table {t}", f"delete table {t}", f"table {t} {{"]
        if self.comment is not None:
            out.append(f"\tcomment {quote(self.comment)}")
        # Sets first, then chains: nft resolves the names either way inside one
        # table block, but a reader meets the data before the rules that use it.
        for s in self.sets:
            out.append(f"\t{s.kind} {s.name} {{")
            out.extend(f"\t\t{line}" for line in s.declaration())
            if s.elements:
                out.append("\t\telements = {")
                out.append(",\n".join(_element_lines(s.elements)))
                out.append("\t\t}")
            out.append("\t}")
        for c in self.chains:
            out.append(f"\tchain {c.name} {{")
            if c.base is not None:
                out.append(f"\t\t{c.base.spec()}")
            if c.comment is not None:
                out.append(f"\t\tcomment {quote(c.comment)}")
            out.extend(f"\t\t{rule}" for rule in c.rules)
            out.append("\t}")
        out.append("}")
        return "\n".join(out) + "\n"


_EMPTY: Mapping[str, str | None] = MappingProxyType({})


def frozen_elements(elements: dict[str, str | None]) -> Mapping[str, str | None]:
    """A read-only view of an element dict (not a copy: hand it over, then let go)."""
    return MappingProxyType(elements)


def _element_lines(elements: Mapping[str, str | None]) -> Iterable[str]:
    for k, v in elements.items():
        yield f"\t\t\t{k}" if v is None else f"\t\t\t{k} : {v}"


def quote(text: str) -> str:
    """An nft string literal (nft has no escapes, so quotes are refused)."""
    if '"' in text or "\n" in text:
        raise ValueError(f"cannot quote {text!r} for nft")
    return f'"{text}"'


# --------------------------------------------------------------------------- diff


def diff(old: Ruleset, new: Ruleset) -> str:
    """An ``nft -f`` script (one transaction) that turns table ``old`` into ``new``.

    Only what changed is touched: element adds and deletes in sets and maps whose
    definition is unchanged, chains flushed and refilled when their rules changed,
    chains and sets added or deleted as needed. Commands are ordered so that every
    reference resolves at every step: new chains and sets are created first,
    rules that may point at doomed objects are flushed before those objects are
    deleted, and deleted chains go last, once nothing jumps to them or maps to
    them. Returns ``""`` when nothing changed.

    A table of another family or name is not an update: that yields the full
    replace script of ``new``.
    """
    if (old.family, old.table) != (new.family, new.table):
        return new.script()
    t = f"{new.family} {new.table}"
    old_chains = {c.name: c for c in old.chains}
    new_chains = {c.name: c for c in new.chains}
    old_sets = {s.name: s for s in old.sets}
    new_sets = {s.name: s for s in new.sets}

    added_sets = [s for s in new.sets if s.name not in old_sets]
    removed_sets = [s for s in old.sets if s.name not in new_sets]
    redefined = [
        s for s in new.sets if s.name in old_sets and not s.same_definition(old_sets[s.name])
    ]
    kept_sets = [s for s in new.sets if s.name in old_sets and s.same_definition(old_sets[s.name])]
    doomed_sets = {s.name for s in removed_sets} | {s.name for s in redefined}

    added_chains = [c for c in new.chains if c.name not in old_chains]
    removed_chains = [c for c in old.chains if c.name not in new_chains]
    recreated = [
        c for c in new.chains if c.name in old_chains and not c.same_definition(old_chains[c.name])
    ]
    recreated_names = {c.name for c in recreated}
    # Chains whose rules change, plus unchanged ones that use a set being recreated
    # (their rules must let go of the old set before it can be deleted).
    refilled = [
        c
        for c in new.chains
        if c.name in old_chains
        and c.name not in recreated_names
        and (c.rules != old_chains[c.name].rules or _uses_any(c.rules, doomed_sets))
    ]

    out: list[str] = []
    for c in recreated:
        out.append(f"delete chain {t} {c.name}")
    for c in added_chains + recreated:
        spec = f" {{ {c.base.spec()} }}" if c.base is not None else ""
        out.append(f"add chain {t} {c.name}{spec}")
    for c in refilled + removed_chains:
        out.append(f"flush chain {t} {c.name}")
    for s in kept_sets:
        gone = _element_changes(old_sets[s.name], s)[0]
        out.extend(_element_command("delete", t, s.name, gone))
    for s in removed_sets + redefined:
        out.append(f"delete {old_sets[s.name].kind} {t} {s.name}")
    for s in added_sets + redefined:
        out.append(f"add {s.kind} {t} {s.name} {{ " + "; ".join(s.declaration()) + "; }")
        out.extend(_element_command("add", t, s.name, (Element(*e) for e in s.elements.items())))
    for s in kept_sets:
        fresh = _element_changes(old_sets[s.name], s)[1]
        out.extend(_element_command("add", t, s.name, fresh))
    for c in added_chains + recreated + refilled:
        out.extend(f"add rule {t} {c.name} {rule}" for rule in c.rules)
    for c in removed_chains:
        out.append(f"delete chain {t} {c.name}")
    return "".join(line + "\n" for line in out)


def _uses_any(rules: Iterable[str], sets: set[str]) -> bool:
    return bool(sets) and any(tok[1:] in sets for r in rules for tok in r.split() if tok[0] == "@")


def _element_changes(old: NftSet, new: NftSet) -> tuple[list[Element], list[Element]]:
    """(elements to delete, elements to add); a changed map value is both."""
    before, after = old.elements, new.elements
    gone = [Element(k, v) for k, v in before.items() if k not in after or after[k] != v]
    fresh = [Element(k, v) for k, v in after.items() if k not in before or before[k] != v]
    return gone, fresh


def _element_command(verb: str, table: str, name: str, elements: Iterable[Element]) -> list[str]:
    # A map element is deleted by its key alone.
    items = [e.key if verb == "delete" else str(e) for e in elements]
    if not items:
        return []
    return [f"{verb} element {table} {name} {{ " + ", ".join(items) + " }"]


# ------------------------------------------------------------------------ parsing

# Tokens: quoted strings, single punctuation, newlines, words (addresses, names,
# operators) and comments (from '#' to the end of the line). Every character that
# is not white space belongs to one of them, so findall() loses nothing; a quote
# without its closing quote comes out alone and is refused.
_TOKEN = re.compile(r'"[^"\n]*"|[{},;\n]|[^\s{},;"#]+|#[^\n]*|"')


def tokenize(text: str) -> list[str]:
    """Split nft text into tokens; newlines are kept as ``"\\n"`` tokens."""
    tokens = _TOKEN.findall(text)
    if '"' in tokens:
        raise NftSyntaxError("unterminated string")
    if "#" in text:
        tokens = [t for t in tokens if not t.startswith("#")]
    return tokens


def join_tokens(tokens: Iterable[str]) -> str:
    """The normalised spelling of a token run: one space apart, none before , or ;."""
    out = ""
    for tok in tokens:
        if out and tok not in (",", ";"):
            out += " "
        out += tok
    return out


def parse_script(text: str, start: Ruleset | None = None) -> Ruleset:
    """Replay an ``nft -f`` script (or an ``nft list table`` listing).

    Starts from ``start`` (the table as it is, or nothing) and applies every
    command the way the kernel would, refusing what the kernel refuses (adding
    a map element that exists with another value, deleting what is not there).
    The script must leave exactly one table, which is returned.
    """
    state = _State()
    if start is not None:
        state.load(start)
    _Parser(tokenize(text), state).run()
    return state.result()


@dataclass
class _TableState:
    family: str
    name: str
    comment: str | None = None
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    elements: dict[str, dict[str, str | None]] = field(default_factory=dict)


class _State:
    """Tables being built while a script is replayed."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], _TableState] = {}

    def load(self, rs: Ruleset) -> None:
        t = _TableState(rs.family, rs.table, rs.comment)
        for c in rs.chains:
            t.chains[c.name] = c
        for s in rs.sets:
            t.sets[s.name] = replace(s, elements=_EMPTY)
            t.elements[s.name] = dict(s.elements)
        self.tables[(rs.family, rs.table)] = t

    def table(self, family: str, name: str) -> _TableState:
        try:
            return self.tables[(family, name)]
        except KeyError:
            raise NftSyntaxError(f"no table {family} {name}") from None

    def result(self) -> Ruleset:
        if len(self.tables) != 1:
            raise NftSyntaxError(f"script leaves {len(self.tables)} tables, expected one")
        (t,) = self.tables.values()
        sets = tuple(
            replace(s, elements=frozen_elements(t.elements[s.name])) for s in t.sets.values()
        )
        return Ruleset(t.family, t.name, tuple(t.chains.values()), sets, t.comment)


_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")


class _Parser:
    """Recursive descent over the token list, applying commands to a _State."""

    def __init__(self, tokens: list[str], state: _State) -> None:
        self.toks = tokens
        self.i = 0
        self.state = state

    # -- token helpers
    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        if self.i >= len(self.toks):
            raise NftSyntaxError("unexpected end of script")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, want: str) -> None:
        got = self.take()
        if got != want:
            raise NftSyntaxError(f"expected {want!r}, got {got!r} near {self.context()}")

    def skip_breaks(self) -> None:
        while self.peek() in ("\n", ";"):
            self.i += 1

    def context(self) -> str:
        return join_tokens(t for t in self.toks[max(0, self.i - 6) : self.i + 6] if t != "\n")

    def statement(self) -> list[str]:
        """Tokens up to the end of the statement (newline or ';' outside braces)."""
        depth = 0
        out: list[str] = []
        while (tok := self.peek()) is not None:
            if depth == 0 and tok in ("\n", ";", "}"):
                break
            self.i += 1
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
            if tok != "\n":
                out.append(tok)
        return out

    # -- top level
    def run(self) -> None:
        while True:
            self.skip_breaks()
            tok = self.peek()
            if tok is None:
                return
            self.i += 1
            if tok == "table":
                self.table_block()
            elif tok in ("add", "create"):
                self.add_command()
            elif tok == "delete":
                self.delete_command()
            elif tok == "flush":
                self.flush_command()
            else:
                raise NftSyntaxError(f"unknown command {tok!r} near {self.context()}")

    def family_and_table(self) -> tuple[str, str]:
        family = self.take()
        if family not in _FAMILIES:
            raise NftSyntaxError(f"unknown family {family!r}")
        return family, self.take()

    def table_block(self) -> None:
        family, name = self.family_and_table()
        t = self.state.tables.setdefault((family, name), _TableState(family, name))
        self.expect("{")
        while True:
            self.skip_breaks()
            tok = self.take()
            if tok == "}":
                return
            if tok == "comment":
                t.comment = _unquote(self.take())
            elif tok == "chain":
                name = self.take()
                self.ensure_chain(t, name)
                self.expect("{")
                self.chain_body(t, name)
            elif tok in ("set", "map"):
                name = self.take()
                self.expect("{")
                self.set_body(t, name, tok)
            else:
                raise NftSyntaxError(f"unknown table item {tok!r} near {self.context()}")

    def ensure_chain(self, t: _TableState, name: str) -> None:
        t.chains.setdefault(name, Chain(name))

    def chain_body(self, t: _TableState, name: str) -> None:
        while True:
            self.skip_breaks()
            if self.peek() == "}":
                self.i += 1
                return
            words = self.statement()
            chain = t.chains[name]
            if words[0] == "type":
                t.chains[name] = replace(chain, base=_base_chain(words, chain.base))
            elif words[0] == "policy":
                if chain.base is None or len(words) != 2:
                    raise NftSyntaxError(f"policy on a regular chain {name!r}")
                t.chains[name] = replace(chain, base=replace(chain.base, policy=words[1]))
            elif words[0] == "comment" and len(words) == 2:
                t.chains[name] = replace(chain, comment=_unquote(words[1]))
            else:
                t.chains[name] = replace(chain, rules=(*chain.rules, join_tokens(words)))

    def set_body(self, t: _TableState, name: str, kind: str) -> None:
        key: str | None = None
        data: str | None = None
        typeof = False
        flags: tuple[str, ...] = ()
        timeout: int | None = None
        comment: str | None = None
        elements: list[Element] = []
        while True:
            self.skip_breaks()
            tok = self.take()
            if tok == "}":
                break
            if tok == "elements":
                self.expect("=")
                self.expect("{")
                elements.extend(self.element_list())
                continue
            words = self.statement()
            if tok in ("type", "typeof"):
                typeof = tok == "typeof"
                if ":" in words:
                    cut = words.index(":")
                    key, data = join_tokens(words[:cut]), join_tokens(words[cut + 1 :])
                else:
                    key = join_tokens(words)
            elif tok == "flags":
                flags = tuple(w for w in words if w != ",")
            elif tok == "timeout" and len(words) == 1:
                timeout = parse_duration(words[0])
            elif tok == "comment" and len(words) == 1:
                comment = _unquote(words[0])
            elif tok == "size" and len(words) == 1 and words[0].isdigit():
                pass  # nft lists the default size of dynamic sets; we never set one
            else:
                raise NftSyntaxError(f"unknown {kind} attribute {join_tokens([tok, *words])!r}")
        if key is None:
            raise NftSyntaxError(f"{kind} {name!r} has no type")
        new = NftSet(name, key, data, typeof, flags, timeout, comment)
        if new.is_map != (kind == "map"):
            raise NftSyntaxError(f"{kind} {name!r}: a map needs a data type, a set none")
        old = t.sets.get(name)
        if old is None:
            t.sets[name] = new
            t.elements[name] = {}
        elif not old.same_definition(new):
            raise NftSyntaxError(f"{kind} {name!r} exists with another definition")
        self.add_elements(t, name, elements)

    def element_list(self) -> list[Element]:
        """Elements up to the closing brace: ``key [: value]`` separated by commas."""
        try:
            end = self.toks.index("}", self.i)
        except ValueError:
            raise NftSyntaxError("elements without a closing brace") from None
        chunk = self.toks[self.i : end]
        if "{" not in chunk and not any(t[0] == '"' for t in chunk):
            # The common case, in bulk: ours and nft's listings put no strings or
            # braces inside elements, so the text splits on its separators.
            self.i = end + 1
            text = " ".join(t for t in chunk if t != "\n").replace(" ,", ",")
            out = []
            for item in text.split(", "):
                item = item.strip(" ,")
                if item:
                    key, sep, value = item.partition(" : ")
                    if " : " in value or (not sep and item.endswith(" :")):
                        raise NftSyntaxError(f"bad element {item!r}")
                    out.append(Element(key, value if sep else None))
            return out
        out = []
        current: list[str] = []
        while True:
            tok = self.take()
            if tok == "\n":
                continue
            if tok in (",", "}"):
                if current:
                    out.append(_element(current))
                    current = []
                if tok == "}":
                    return out
                continue
            if tok == "{":
                raise NftSyntaxError(f"nested braces in elements near {self.context()}")
            current.append(tok)

    def add_elements(self, t: _TableState, name: str, elements: list[Element]) -> None:
        store = t.elements[name]
        is_map = t.sets[name].is_map
        for e in elements:
            if (e.value is not None) != is_map:
                raise NftSyntaxError(f"element {e} does not fit {name!r}")
            if e.key in store and store[e.key] != e.value:
                raise NftSyntaxError(f"element {e.key} of {name!r} exists with another value")
            store[e.key] = e.value

    # -- commands
    def add_command(self) -> None:
        what = self.take()
        if what == "table":
            family, name = self.family_and_table()
            self.state.tables.setdefault((family, name), _TableState(family, name))
            return
        t = self.state.table(*self.family_and_table())
        name = self.take()
        if what == "chain":
            self.ensure_chain(t, name)
            if self.peek() == "{":
                self.i += 1
                self.chain_body(t, name)
        elif what in ("set", "map"):
            self.expect("{")
            self.set_body(t, name, what)
        elif what == "rule":
            if name not in t.chains:
                raise NftSyntaxError(f"rule for unknown chain {name!r}")
            chain = t.chains[name]
            t.chains[name] = replace(chain, rules=(*chain.rules, join_tokens(self.statement())))
        elif what == "element":
            if name not in t.sets:
                raise NftSyntaxError(f"elements for unknown set {name!r}")
            self.expect("{")
            self.add_elements(t, name, self.element_list())
        else:
            raise NftSyntaxError(f"unknown object {what!r} near {self.context()}")

    def delete_command(self) -> None:
        what = self.take()
        family, tname = self.family_and_table()
        if what == "table":
            if self.state.tables.pop((family, tname), None) is None:
                raise NftSyntaxError(f"delete of missing table {family} {tname}")
            return
        t = self.state.table(family, tname)
        name = self.take()
        if what == "chain":
            if t.chains.pop(name, None) is None:
                raise NftSyntaxError(f"delete of missing chain {name!r}")
        elif what in ("set", "map"):
            if name not in t.sets or t.sets[name].kind != what:
                raise NftSyntaxError(f"delete of missing {what} {name!r}")
            del t.sets[name], t.elements[name]
        elif what == "element":
            if name not in t.sets:
                raise NftSyntaxError(f"elements for unknown set {name!r}")
            self.expect("{")
            store = t.elements[name]
            for e in self.element_list():
                if store.pop(e.key, _MISSING) is _MISSING:
                    raise NftSyntaxError(f"delete of missing element {e.key} from {name!r}")
        else:
            raise NftSyntaxError(f"unknown object {what!r} near {self.context()}")

    def flush_command(self) -> None:
        what = self.take()
        t = self.state.table(*self.family_and_table())
        if what == "table":
            for name, chain in t.chains.items():
                t.chains[name] = replace(chain, rules=())
            return
        name = self.take()
        if what == "chain" and name in t.chains:
            t.chains[name] = replace(t.chains[name], rules=())
        elif what in ("set", "map") and name in t.sets:
            t.elements[name] = {}
        else:
            raise NftSyntaxError(f"flush of missing {what} {name!r}")


_MISSING = object()


def _element(tokens: list[str]) -> Element:
    if ":" in tokens:
        cut = tokens.index(":")
        return Element(join_tokens(tokens[:cut]), join_tokens(tokens[cut + 1 :]))
    return Element(join_tokens(tokens))


def _unquote(tok: str) -> str:
    if len(tok) < 2 or tok[0] != '"' or tok[-1] != '"':
        raise NftSyntaxError(f"expected a quoted string, got {tok!r}")
    return tok[1:-1]


def _base_chain(words: list[str], old: BaseChain | None) -> BaseChain:
    # type T hook H [device D] priority P
    if len(words) < 6 or words[2] != "hook" or "priority" not in words:
        raise NftSyntaxError(f"bad base chain spec {join_tokens(words)!r}")
    at = words.index("priority")
    if at != 4:
        raise NftSyntaxError(f"unsupported base chain spec {join_tokens(words)!r}")
    priority = parse_priority(words[5:])
    policy = old.policy if old is not None else "accept"
    return BaseChain(words[1], words[3], priority, policy)


def parse_priority(words: list[str]) -> int:
    """``-110``, ``dstnat``, ``dstnat - 10`` or ``dstnat-10`` as an integer."""
    text = "".join(words)
    m = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", text)
    if m is None or not text:
        raise NftSyntaxError(f"bad priority {text!r}")
    name, offset = m.groups()
    if name is not None and name not in STANDARD_PRIORITIES:
        raise NftSyntaxError(f"unknown priority name {name!r}")
    return (STANDARD_PRIORITIES[name] if name else 0) + (int(offset) if offset else 0)


_DURATION = re.compile(r"(\d+)(d|h|ms|m|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """nft durations (``10800s``, ``3h``, ``1h30m``) in whole seconds."""
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        n, unit = int(m.group(1)), m.group(2)
        total += n / 1000 if unit == "ms" else n * _UNIT_SECONDS[unit]
        pos = m.end()
    if pos != len(text) or not text:
        raise NftSyntaxError(f"bad duration {text!r}")
    return int(total)


# ------------------------------------------------------------------- full syncs


def resync_script(new: Ruleset, kernel: Ruleset, keep: Callable[[NftSet], bool]) -> str:
    """One transaction that makes an existing table ``new`` without deleting the table.

    ``kernel`` is the table as it is, chains and set definitions only (what ``nft list
    chains`` and ``nft -t list sets`` show; rules and elements are not needed). Every
    chain is flushed and refilled and every set refilled, except the sets ``keep``
    says to leave alone when their definition is unchanged (dynamic sets, whose
    entries are state such as ClientIP affinity). Chains and sets ``new`` has not are
    deleted, once every rule and element that could refer to them is gone; those
    whose definition changed are deleted and created again. One transaction, so no
    packet ever sees a half-written table.
    """
    t = f"{new.family} {new.table}"
    wanted_chains = {c.name: c for c in new.chains}
    wanted_sets = {s.name: s for s in new.sets}
    out = [f"add table {t}"]
    out += [f"flush chain {t} {c.name}" for c in kernel.chains]
    doomed_sets = []
    kept = set()
    for s in kernel.sets:
        want = wanted_sets.get(s.name)
        if want is None or not want.same_definition(replace(s, elements=_EMPTY)):
            doomed_sets.append(s)
        elif keep(want):
            kept.add(s.name)
        else:
            out.append(f"flush {s.kind} {t} {s.name}")
    doomed_chains = [
        c
        for c in kernel.chains
        if c.name not in wanted_chains or not wanted_chains[c.name].same_definition(c)
    ]
    # Nothing refers to anything now: flushed chains have no rules, and sets are
    # either flushed or about to go with their elements.
    out += [f"delete {s.kind} {t} {s.name}" for s in doomed_sets]
    out += [f"delete chain {t} {c.name}" for c in doomed_chains]
    for c in new.chains:
        spec = f" {{ {c.base.spec()} }}" if c.base is not None else ""
        out.append(f"add chain {t} {c.name}{spec}")
    for s in new.sets:
        out.append(f"add {s.kind} {t} {s.name} {{ " + "; ".join(s.declaration()) + "; }")
    for s in new.sets:
        if s.name not in kept:
            out += _element_command("add", t, s.name, (Element(*e) for e in s.elements.items()))
    for c in new.chains:
        out += [f"add rule {t} {c.name} {rule}" for rule in c.rules]
    return "".join(line + "\n" for line in out)


def load_scripts(new: Ruleset, max_elements: int, last: Iterable[str] = ()) -> list[str]:
    """Scripts that create table ``new`` where there is none, in several transactions.

    The first creates the table, its chains, rules and (empty) sets; the others add
    at most ``max_elements`` elements each, the sets named in ``last`` at the end, in
    that order. nft's cost grows faster than linearly with the size of a
    transaction, and the transactions are loaded one after another, so a large table
    loads faster, and its first services work sooner, this way. Give as ``last`` the
    sets that make a service reachable (the dispatch maps), so that a service appears
    only once everything it points at is loaded.
    """
    t = f"{new.family} {new.table}"
    skeleton = replace(new, sets=tuple(replace(s, elements=_EMPTY) for s in new.sets))
    first = skeleton.script()
    tail = [name for name in last if any(s.name == name for s in new.sets)]
    order = [s for s in new.sets if s.name not in tail]
    order += [new.set(name) for name in tail]
    scripts = [first]
    lines: list[str] = []
    count = 0
    for s in order:
        items = list(s.elements.items())
        for start in range(0, len(items), max_elements):
            chunk = items[start : start + max_elements]
            if count + len(chunk) > max_elements and lines:
                scripts.append("".join(lines))
                lines, count = [], 0
            lines += [
                line + "\n"
                for line in _element_command("add", t, s.name, (Element(*e) for e in chunk))
            ]
            count += len(chunk)
    if lines:
        scripts.append("".join(lines))
    return scripts
