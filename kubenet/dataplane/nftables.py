"""Apply an nftables plan to the kernel, read it back, and clean up after it.

A plan (from :mod:`kubenet.render.nftables`) is one ``nft -f`` script for the
``kube-proxy`` table of one family. ``nft`` runs a script as a single transaction,
so :func:`apply` either changes the table as a whole or, raising
:class:`~kubenet.dataplane.command.CommandError` with nft's stderr, not at all.

Everything takes ``netns``: the name of a network namespace to work in instead of
the current one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any, Protocol

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


class NftContext:
    """``nft -f`` without a process per call: libnftables in this process (through ctypes).

    Starting ``nft`` costs more than a small update itself (10 to 30 ms against 2 to 3
    ms on a table of 10,000 Services): the binary must start and read the kernel's
    table definitions each time, while a library context keeps them, refreshing only
    when the ruleset's generation changes. Where the library is missing, it runs the
    binary instead. A context talks to the network namespace of the thread that first
    uses it; use it from one thread at a time.
    """

    def __init__(self, library: str = "libnftables.so.1") -> None:
        self._library = library
        self._lib: Any = None
        self._ctx: int | None = None
        self._unavailable = False

    def open(self) -> bool:
        """Open the library context now; False when the library is not there."""
        return self._open()

    def _open(self) -> bool:
        if self._ctx is not None:
            return True
        if self._unavailable:
            return False
        try:
            lib = ctypes.CDLL(self._library)
        except OSError:
            self._unavailable = True
            return False
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            self._unavailable = True
            return False
        # Keep nft's messages for the error we raise, and its output off our stdout.
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_buffer_output(ctx)
        self._lib, self._ctx = lib, ctx
        return True

    def load(self, script: str) -> None:
        """Run a script as one transaction; raise CommandError with nft's message if refused."""
        if not self._open():
            load(script)
            return
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        if rc != 0:
            message = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
            raise CommandError(["nft", "-f", "-"], rc, message.decode(errors="replace"))

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None
