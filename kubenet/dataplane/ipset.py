"""Program ipsets with ``ipset restore``: only the entries that changed, in one batch.

Why ``ipset restore`` rather than pyroute2's ipset socket: the sets' text form is what
the plan already carries (it is what ``node-proxy render`` prints and what the kernel
test loads), ``ipset save`` reads the kernel's state back in the very same spelling,
and one process applies a whole sync. The alternative that ``ipset restore`` also
offers, filling a temporary set and ``swap``-ping it in, would be atomic per set but
rewrites every entry on every sync, and the temporary names would not fit ipset's
31-character limit next to names like ``KUBE-6-LOAD-BALANCER-SOURCE-CID``.

So a sync reads ``ipset save``, and :func:`sync_script` (pure) writes the difference:
``create -exist`` for each set, ``add -exist`` for each missing entry, ``del -exist``
for each stale one. Adding before deleting means a set never misses an entry that
stays. A batch that fails part-way leaves the sets between the old and new state;
the next sync computes the difference again from what the kernel then holds.

Everything takes ``netns``: the name of a network namespace to work in (sets are per
network namespace).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubenet.dataplane.command import CommandError, run


class IpSetLike(Protocol):
    """What a sync needs of :class:`kubenet.render.ipvs.IpSet`."""

    @property
    def name(self) -> str: ...

    @property
    def create(self) -> str: ...

    @property
    def entries(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class SetState:
    """One set as ``ipset save`` shows it: its ``create`` line and its entries."""

    name: str
    create: str
    entries: frozenset[str]


def parse_save(text: str) -> dict[str, SetState]:
    """The sets in ``ipset save`` output, by name."""
    creates: dict[str, str] = {}
    entries: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            creates[words[1]] = line.strip()
            entries.setdefault(words[1], set())
        elif len(words) >= 3 and words[0] == "add":
            # Entries may carry options after a space (timeout, comment): keep the element.
            entries.setdefault(words[1], set()).add(words[2])
    return {
        name: SetState(name, create, frozenset(entries.get(name, ())))
        for name, create in creates.items()
    }


def sync_script(current: Mapping[str, SetState], desired: Iterable[IpSetLike]) -> str:
    """``ipset restore`` input that turns ``current`` into ``desired`` (empty: no change).

    Sets that ``current`` has and ``desired`` does not are left alone: other software
    may own them; :func:`destroy` removes ours.
    """
    lines: list[str] = []
    deletes: list[str] = []
    for s in desired:
        have = current.get(s.name)
        if have is None:
            lines.append(f"{s.create} -exist")
            lines.extend(f"add {s.name} {entry} -exist" for entry in s.entries)
            continue
        wanted = set(s.entries)
        lines.extend(
            f"add {s.name} {entry} -exist" for entry in s.entries if entry not in have.entries
        )
        deletes.extend(f"del {s.name} {entry} -exist" for entry in sorted(have.entries - wanted))
    return "".join(f"{line}\n" for line in (*lines, *deletes))


def save(*, netns: str | None = None) -> str:
    """``ipset save``: every set of the namespace with its entries."""
    return run(["ipset", "save"], netns=netns).stdout


def restore(text: str, *, netns: str | None = None) -> None:
    """Feed ``text`` to ``ipset restore``."""
    if text.strip():
        run(["ipset", "restore"], netns=netns, stdin=text)


def sync(sets: Sequence[IpSetLike], *, netns: str | None = None) -> str:
    """Make the kernel's sets hold exactly the entries of ``sets``; returns the script run."""
    script = sync_script(parse_save(save(netns=netns)), sets)
    restore(script, netns=netns)
    return script


def destroy(names: Iterable[str], *, netns: str | None = None) -> list[str]:
    """Destroy the named sets that exist; returns the names destroyed.

    A set still referenced by an iptables rule cannot be destroyed: remove the rules
    first, or this raises :class:`~kubenet.dataplane.command.CommandError`.
    """
    existing = parse_save(save(netns=netns))
    gone = [name for name in names if name in existing]
    for name in gone:
        run(["ipset", "destroy", name], netns=netns)
    return gone


def available(*, netns: str | None = None) -> str | None:
    """Why ipsets cannot be used here, or None when ``ipset`` works."""
    try:
        run(["ipset", "list", "-n"], netns=netns)
    except CommandError as exc:
        return f"ipset does not work here: {exc}"
    return None
