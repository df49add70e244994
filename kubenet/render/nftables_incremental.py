"""The nftables table of one family, kept up to date one service port at a time.

:func:`kubenet.render.nftables.render` builds the whole table from a ServiceMap; a
long-running proxy cannot afford that (nor diffing two whole tables) for every
endpoint change in a large cluster. :class:`IncrementalTable` knows which ports the
table holds and the elements, chains and sets they add up to, and turns new versions
of a few ports into the ``nft -f`` script for exactly what changed: the work and the
script grow with the change, not with the cluster.

What a port contributes is a pure function of the port and of the service keys it
won (:class:`~kubenet.render.nftables.PortRenderer`), so the old contribution of a
changed port is rendered again rather than stored. Two ports may claim one service
key (an address and port, or a node port); the first in ServiceMap order wins, as in
a full render, whatever order the updates come in: the table keeps, per key, who asks
for it, and renders the next claimant when the winner goes.

The invariant, checked by the tests: after any sequence of updates, :meth:`ruleset`
equals a full render of the same ports, and each update's script turns the previous
table into the next one. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from kubenet.model import IPFamily, ServicePort, ServicePortName
from kubenet.options import RenderOptions
from kubenet.render.nft_ruleset import Chain, NftSet, Ruleset, frozen_elements
from kubenet.render.nftables import PortRenderer, PortRules, group_order, view_claim_keys


@dataclass(frozen=True)
class NftDelta:
    """What one update changed, as an ``nft -f`` script (one transaction)."""

    script: str
    #: Set and map elements deleted plus elements added (a changed value counts twice).
    elements: int
    #: Chains and sets created, refilled or deleted.
    objects: int

    @property
    def empty(self) -> bool:
        return not self.script


class _Absent:
    """An element, chain or set that does not exist (yet, or any more)."""


_ABSENT = _Absent()
_Value = str | None | _Absent


class IncrementalTable:
    """One family's ``kube-proxy`` table, as the sum of its service ports' rules."""

    def __init__(self, options: RenderOptions) -> None:
        self.options = options
        self.family: IPFamily = options.ip_family
        self._renderer = PortRenderer(options)
        self._static = self._renderer.static()
        self._static_sets = {s.name: s for s in self._static.sets}
        self._target = f"{self._static.family} {self._static.table}"
        self._ports: dict[ServicePortName, ServicePort] = {}
        self._claims: dict[ServicePortName, tuple[str, ...]] = {}
        self._owners: dict[str, list[ServicePortName]] = {}
        self._won: dict[ServicePortName, frozenset[str]] = {}
        self._elements: dict[str, dict[str, str | None]] = {
            s.name: dict(s.elements) for s in self._static.sets
        }
        # Writers of an element beyond the first (a ClusterIP shared by the ports of
        # one Service, a hairpin entry shared by two Services of one endpoint).
        self._extra: dict[tuple[str, str], int] = {}
        self._groups: dict[str, int] = {}
        self._chains: dict[str, Chain] = {}
        self._sets: dict[str, NftSet] = {}

    def __len__(self) -> int:
        return len(self._ports)

    def __contains__(self, name: object) -> bool:
        return name in self._ports

    def ports(self) -> Iterator[ServicePort]:
        """The ports the table holds (single-family views), in no particular order."""
        return iter(self._ports.values())

    # ---------------------------------------------------------------- reading

    def ruleset(self) -> Ruleset:
        """The whole table as it stands (a snapshot)."""
        sets = [
            replace(s, elements=frozen_elements(dict(self._elements[s.name])))
            for s in self._static.sets
        ]
        groups = sorted(self._groups, key=group_order)
        return replace(
            self._static,
            chains=(
                *self._static.chains,
                *(self._renderer.group(g) for g in groups),
                *self._chains.values(),
            ),
            sets=(*sets, *self._sets.values()),
        )

    def element_count(self) -> int:
        """Elements in the table's sets and maps (affinity sets' dynamic entries aside)."""
        return sum(len(e) for e in self._elements.values())

    # --------------------------------------------------------------- updating

    def update(
        self, changes: Mapping[ServicePortName, ServicePort | None], *, script: bool = True
    ) -> NftDelta:
        """Take new versions of some ports (None: the port is gone); return the script.

        A port without a ClusterIP of this family counts as gone. The script turns
        the table as it was into the table as it now is, in one transaction. With
        ``script=False`` none is written (a full sync writes the whole table anyway),
        which saves the bookkeeping of what each element was before.
        """
        old_rules: list[PortRules] = []
        new_rules: list[PortRules] = []
        changed: set[ServicePortName] = set()
        contested: set[str] = set()
        for name, port in changes.items():
            view = port.for_family(self.family) if port is not None else None
            if view is not None and view.cluster_ip(self.family) is None:
                view = None
            old = self._ports.get(name)
            if view is None and old is None:
                continue
            if old is not None:
                old_rules.append(self._renderer.render_view(old, self._won.pop(name)))
            old_keys = self._claims.pop(name, ())
            new_keys = view_claim_keys(view, self.family) if view is not None else ()
            for key in old_keys:
                owners = self._owners[key]
                owners.remove(name)
                if owners:
                    contested.add(key)
                else:
                    del self._owners[key]
            for key in new_keys:
                owners = self._owners.setdefault(key, [])
                owners.append(name)
                if len(owners) > 1:
                    contested.add(key)
            if view is None:
                del self._ports[name]
            else:
                self._ports[name] = view
                self._claims[name] = new_keys
            changed.add(name)
        # Ports that may have won or lost a contested key render differently too.
        others = {o for key in contested for o in self._owners.get(key, ())} - changed
        for name in others:
            won = self._winnings(name)
            if won != self._won[name]:
                old_rules.append(self._renderer.render_view(self._ports[name], self._won[name]))
                self._won[name] = won
                new_rules.append(self._renderer.render_view(self._ports[name], won))
        for name in changed:
            port = self._ports.get(name)
            if port is not None:
                won = self._won[name] = self._winnings(name)
                new_rules.append(self._renderer.render_view(port, won))
        if not script:
            for rules in old_rules:
                self._remove(rules)
            for rules in new_rules:
                self._add(rules)
            return NftDelta("", 0, 0)
        return self._apply(old_rules, new_rules)

    def _winnings(self, name: ServicePortName) -> frozenset[str]:
        """The claimed keys ``name`` is first (in ServiceMap order) to claim."""
        won = []
        for key in self._claims[name]:
            owners = self._owners[key]
            if len(owners) == 1 or min(owners, key=_order) == name:
                won.append(key)
        return frozenset(won)

    def _apply(self, old_rules: list[PortRules], new_rules: list[PortRules]) -> NftDelta:
        """Swap old contributions for new ones; write the script for the difference."""
        if not old_rules:
            return self._additions(new_rules)
        # What each touched element, chain and set was before, to compare afterwards.
        before: dict[str, dict[str, _Value]] = {}
        for rules in (*old_rules, *new_rules):
            for set_name, pairs in rules.elements:
                found = self._elements[set_name]
                seen = before.setdefault(set_name, {})
                for key, _ in pairs:
                    if key not in seen:
                        seen[key] = found.get(key, _ABSENT)
        chains_before = {
            name: self._chain(name)
            for rules in (*old_rules, *new_rules)
            for name in (*rules.groups, *(c.name for c in rules.chains))
        }
        sets_before: dict[str, NftSet | None] = {
            s.name: self._sets.get(s.name) for rules in (*old_rules, *new_rules) for s in rules.sets
        }
        for rules in old_rules:
            self._remove(rules)
        for rules in new_rules:
            self._add(rules)
        return self._script(before, chains_before, sets_before)

    def _additions(self, new_rules: list[PortRules]) -> NftDelta:
        """:meth:`_apply` when nothing goes (new ports, a table being filled): only adds.

        An element another port already wrote changes nothing (the first writer's
        value stands), so the script adds exactly the keys that were absent, and the
        chains and sets that did not exist.
        """
        t = self._target
        added: dict[str, list[str]] = {}
        chains: dict[str, Chain] = {}
        sets: list[NftSet] = []
        extra = self._extra
        for rules in new_rules:
            for set_name, pairs in rules.elements:
                found = self._elements[set_name]
                fresh = added.setdefault(set_name, [])
                for key, value in pairs:
                    if key in found:
                        extra[(set_name, key)] = extra.get((set_name, key), 0) + 1
                    else:
                        found[key] = value
                        fresh.append(key if value is None else f"{key} : {value}")
            for group in rules.groups:
                if group not in self._groups:
                    chains[group] = self._renderer.group(group)
                    self._groups[group] = 0
                self._groups[group] += 1
            for chain in rules.chains:
                chains[chain.name] = self._chains[chain.name] = chain
            for nft_set in rules.sets:
                self._sets[nft_set.name] = nft_set
                sets.append(nft_set)
        out = [f"add chain {t} {name}" for name in chains]
        out += [f"add {s.kind} {t} {s.name} {{ " + "; ".join(s.declaration()) + "; }" for s in sets]
        out += [_elements("add", t, name, items) for name, items in added.items() if items]
        out += [f"add rule {t} {c.name} {rule}" for c in chains.values() for rule in c.rules]
        count = sum(len(items) for items in added.values())
        return NftDelta("".join(line + "\n" for line in out), count, len(chains) + len(sets))

    def _remove(self, rules: PortRules) -> None:
        extra = self._extra
        for set_name, pairs in rules.elements:
            found = self._elements[set_name]
            for key, _ in pairs:
                more = extra.get((set_name, key))
                if more is None:
                    del found[key]
                elif more == 1:
                    del extra[(set_name, key)]
                else:
                    extra[(set_name, key)] = more - 1
        for group in rules.groups:
            left = self._groups[group] - 1
            if left:
                self._groups[group] = left
            else:
                del self._groups[group]
        for chain in rules.chains:
            del self._chains[chain.name]
        for nft_set in rules.sets:
            del self._sets[nft_set.name]

    def _add(self, rules: PortRules) -> None:
        extra = self._extra
        for set_name, pairs in rules.elements:
            found = self._elements[set_name]
            for key, value in pairs:
                if key in found:
                    # The first writer's value stands, as in a full render.
                    extra[(set_name, key)] = extra.get((set_name, key), 0) + 1
                else:
                    found[key] = value
        for group in rules.groups:
            self._groups[group] = self._groups.get(group, 0) + 1
        for chain in rules.chains:
            self._chains[chain.name] = chain
        for nft_set in rules.sets:
            self._sets[nft_set.name] = nft_set

    def _chain(self, name: str) -> Chain | None:
        chain = self._chains.get(name)
        if chain is None and name in self._groups:
            chain = self._renderer.group(name)
        return chain

    # ----------------------------------------------------------------- script

    def _script(
        self,
        before: dict[str, dict[str, _Value]],
        chains_before: dict[str, Chain | None],
        sets_before: dict[str, NftSet | None],
    ) -> NftDelta:
        """The commands from the state ``before`` to now, ordered so references resolve.

        New chains first; chains whose rules change are flushed, and removed ones
        flushed, before anything they point at goes; element deletes, then set
        deletes and (re)creations, element adds, rules; removed chains last, when no
        rule and no map element refers to them any more.
        """
        t = self._target
        gone: list[tuple[str, list[str]]] = []
        fresh: list[tuple[str, list[str]]] = []
        count = 0
        for set_name, seen in before.items():
            now = self._elements[set_name]
            out = [k for k, v in seen.items() if v is not _ABSENT and now.get(k, _ABSENT) != v]
            into = [
                f"{k} : {now[k]}" if now[k] is not None else k
                for k, v in seen.items()
                if k in now and now[k] != v
            ]
            count += len(out) + len(into)
            if out:
                gone.append((set_name, out))
            if into:
                fresh.append((set_name, into))

        sets_now = {name: self._sets.get(name) for name in sets_before}
        doomed_sets = {
            name for name, old in sets_before.items() if old is not None and old != sets_now[name]
        }
        created_sets = [
            s for name, s in sets_now.items() if s is not None and s != sets_before[name]
        ]
        chains_now = {name: self._chain(name) for name in chains_before}
        added = [c for n, c in chains_now.items() if c is not None and chains_before[n] is None]
        removed = [n for n, c in chains_now.items() if c is None and chains_before[n] is not None]
        refilled = [
            c
            for n, c in chains_now.items()
            if c is not None
            and (old := chains_before[n]) is not None
            and (c.rules != old.rules or _uses(old.rules, doomed_sets))
        ]

        out_lines: list[str] = []
        out_lines += [f"add chain {t} {c.name}" for c in added]
        out_lines += [f"flush chain {t} {c.name}" for c in refilled]
        out_lines += [f"flush chain {t} {name}" for name in removed]
        out_lines += [_elements("delete", t, name, keys) for name, keys in gone]
        out_lines += [
            f"delete {old.kind} {t} {n}"
            for n, old in sets_before.items()
            if n in doomed_sets and old is not None
        ]
        for s in created_sets:
            out_lines.append(f"add {s.kind} {t} {s.name} {{ " + "; ".join(s.declaration()) + "; }")
        out_lines += [_elements("add", t, name, items) for name, items in fresh]
        for c in (*added, *refilled):
            out_lines += [f"add rule {t} {c.name} {rule}" for rule in c.rules]
        out_lines += [f"delete chain {t} {name}" for name in removed]
        objects = len(added) + len(refilled) + len(removed) + len(doomed_sets) + len(created_sets)
        script = "".join(line + "\n" for line in out_lines)
        return NftDelta(script, count, objects)


def _order(name: ServicePortName) -> tuple[str, str, str, str]:
    """ServicePortName's order as a plain tuple (much cheaper to compare)."""
    return name.namespace, name.name, name.port, name.protocol


def _elements(verb: str, table: str, name: str, items: Iterable[str]) -> str:
    return f"{verb} element {table} {name} {{ " + ", ".join(items) + " }"


def _uses(rules: Iterable[str], sets: set[str]) -> bool:
    """Whether any rule refers to one of ``sets`` (``@name``)."""
    return bool(sets) and any(
        tok[1:] in sets for rule in rules for tok in rule.split() if tok.startswith("@")
    )
