"""Apply an nftables plan to the kernel, read it back, and clean up after it.

A plan (from :mod:`kubenet.render.nftables`) is one ``nft -f`` script for the
``kube-proxy`` table of one family. ``nft`` runs a script as a single transaction,
so :func:`apply` either changes the table as a whole or, raising
:class:`~kubenet.dataplane.command.CommandError` with nft's stderr, not at all.

Everything takes ``netns``: the name of a network namespace to work in instead of
the current one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kubenet.dataplane.command import CommandError, in_netns, run
from kubenet.model import IPFamily

#: The table kube-proxy's nftables mode owns, in the ``ip`` and ``ip6`` families.
TABLE = "kube-proxy"


class NftablesPlanLike(Protocol):
    """What :func:`apply` needs of :class:`kubenet.render.nftables.NftablesPlan`."""

    @property
    def family(self) -> IPFamily: ...

    @property
    def text(self) -> str: ...


def nft_family(family: IPFamily) -> str:
    """The nft address family keyword: ``ip`` or ``ip6``."""
    return "ip6" if family is IPFamily.IPV6 else "ip"


def apply(plan: NftablesPlanLike, *, netns: str | None = None) -> None:
    """Run the plan's script with ``nft -f -`` (one transaction)."""
    load(plan.text, netns=netns)


def load(script: str, *, netns: str | None = None) -> None:
    """Run an nft script from standard input."""
    run(["nft", "-f", "-"], netns=netns, stdin=script)


def list_table(family: IPFamily, *, netns: str | None = None) -> str | None:
    """``nft list table`` of kube-proxy's table, or None when there is none."""
    argv = ["nft", "list", "table", nft_family(family), TABLE]
    done = run(argv, netns=netns, check=False)
    if done.returncode == 0:
        return done.stdout
    # nft says "No such file or directory" for a missing table; anything else is real.
    if "No such file or directory" in done.stderr:
        return None
    raise CommandError(in_netns(argv, netns), done.returncode, done.stderr)


def list_ruleset(*, netns: str | None = None) -> str:
    """The whole ruleset, every table of every family."""
    return run(["nft", "list", "ruleset"], netns=netns).stdout


def cleanup(
    families: Iterable[IPFamily] = (IPFamily.IPV4, IPFamily.IPV6), *, netns: str | None = None
) -> None:
    """Delete kube-proxy's table of each family, whether or not it exists.

    Declaring a table before deleting it makes the delete succeed when there was no
    table, with no window between a check and the delete; both families go in one
    transaction.
    """
    lines = []
    for family in families:
        lines.append(f"add table {nft_family(family)} {TABLE}")
        lines.append(f"delete table {nft_family(family)} {TABLE}")
    if lines:
        load("".join(f"{line}\n" for line in lines), netns=netns)


def list_skeleton(family: IPFamily, *, netns: str | None = None) -> str | None:
    """Chains (without rules) and sets (without elements) of kube-proxy's table, or None.

    What a full sync needs to know of an existing table, at a small fraction of the
    cost of ``nft list table`` (which, for a large cluster, lists every element):
    ``nft list chains`` and ``nft -t list sets`` / ``maps``, cut to our table.
    """
    fam = nft_family(family)
    blocks = []
    for argv in (
        ["nft", "list", "chains", fam],
        ["nft", "-t", "list", "sets", fam],
        ["nft", "-t", "list", "maps", fam],
    ):
        blocks += table_blocks(run(argv, netns=netns).stdout, fam, TABLE)
    return "".join(blocks) or None


def table_blocks(listing: str, family: str, table: str) -> list[str]:
    """The ``table FAMILY TABLE { ... }`` blocks of an nft listing (one per listing)."""
    head = f"table {family} {table} {{"
    out: list[str] = []
    inside: list[str] | None = None
    for line in listing.splitlines(keepends=True):
        if inside is None:
            if line.rstrip() == head:
                inside = [line]
        else:
            inside.append(line)
            if line.rstrip() == "}":
                out.append("".join(inside))
                inside = None
    return out
