"""Apply an iptables plan to the kernel, read it back, and clean up after it.

The plan (from :mod:`kubenet.render.iptables`) carries the ``iptables-restore`` input
for kubenet's own chains and the jump rules that hook them into the built-in chains.
:func:`apply` loads the chains first, in one ``iptables-restore --noflush``
transaction, so the jumps it then ensures always point at chains that exist. A
failure raises :class:`~kubenet.dataplane.command.CommandError` with the tool's
stderr: a failed restore changed nothing (the transaction is atomic), and a failed
jump leaves loaded chains that nothing jumps to yet, which is inert.

Everything takes ``netns``: the name of a network namespace to work in instead of
the current one.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubenet.dataplane.command import CommandError, in_netns, run
from kubenet.model import IPFamily

#: Chains with the KUBE- prefix that the kubelet, not kube-proxy, owns; cleanup spares them.
KUBELET_CHAINS = frozenset({"KUBE-FIREWALL", "KUBE-KUBELET-CANARY"})


class JumpRuleLike(Protocol):
    """One rule in a built-in chain that sends packets into kubenet's chains."""

    @property
    def table(self) -> str: ...

    @property
    def chain(self) -> str: ...

    @property
    def args(self) -> tuple[str, ...]: ...


class IptablesPlanLike(Protocol):
    """What :func:`apply` needs of :class:`kubenet.render.iptables.IptablesPlan`."""

    @property
    def family(self) -> IPFamily: ...

    @property
    def restore(self) -> str: ...

    @property
    def jumps(self) -> Sequence[JumpRuleLike]: ...


def command(family: IPFamily) -> str:
    """``iptables`` or ``ip6tables``."""
    return "ip6tables" if family is IPFamily.IPV6 else "iptables"


def apply(plan: IptablesPlanLike, *, netns: str | None = None) -> None:
    """Load ``plan.restore``, then make sure every jump rule of the plan is in place."""
    restore(plan.family, plan.restore, netns=netns)
    for jump in plan.jumps:
        ensure_jump(plan.family, jump, netns=netns)


def restore(family: IPFamily, text: str, *, netns: str | None = None) -> None:
    """Feed ``text`` to ``iptables-restore -w --noflush`` (other chains stay untouched)."""
    if text.strip():
        run([f"{command(family)}-restore", "-w", "--noflush"], netns=netns, stdin=text)


def ensure_jump(family: IPFamily, jump: JumpRuleLike, *, netns: str | None = None) -> bool:
    """Insert the rule at the top of its chain unless it is there; True if it was added.

    Inserting first, as kube-proxy does, keeps service traffic away from rules that
    other software appends to the same built-in chains.
    """
    tool = command(family)
    spec = [tool, "-w", "-t", jump.table]
    if run([*spec, "-C", jump.chain, *jump.args], netns=netns, check=False).returncode == 0:
        return False
    run([*spec, "-I", jump.chain, "1", *jump.args], netns=netns)
    return True


def save(family: IPFamily, *, table: str | None = None, netns: str | None = None) -> str:
    """The current rules as ``iptables-save`` prints them (one table, or all)."""
    argv = [f"{command(family)}-save"]
    if table is not None:
        argv += ["-t", table]
    return run(argv, netns=netns).stdout


def cleanup(family: IPFamily, *, netns: str | None = None, kubelet_chains: bool = False) -> None:
    """Remove every kube-proxy chain (``KUBE-*``) and every rule that jumps into one.

    Works from what is in the kernel rather than from a plan, so it also removes
    what an older version or an interrupted run left behind. Chains the kubelet owns
    (:data:`KUBELET_CHAINS`) are kept, as upstream keeps them, although plans create
    them too; ``kubelet_chains=True`` removes them as well (a node without a kubelet,
    a test namespace). One atomic ``iptables-restore`` per call.
    """
    script = cleanup_script(save(family, netns=netns), kubelet_chains=kubelet_chains)
    restore(family, script, netns=netns)


@dataclass(frozen=True)
class _Table:
    name: str
    chains: tuple[str, ...]
    rules: tuple[str, ...]


_CHAIN_LINE = re.compile(r"^:(\S+) ")
_JUMP_TARGET = re.compile(r"\s-[jg] (\S+)")


def _tables(save_output: str) -> Iterable[_Table]:
    name: str | None = None
    chains: list[str] = []
    rules: list[str] = []
    for line in save_output.splitlines():
        if line.startswith("*"):
            name, chains, rules = line[1:].strip(), [], []
        elif line.strip() == "COMMIT" and name is not None:
            yield _Table(name, tuple(chains), tuple(rules))
            name = None
        elif name is not None and (m := _CHAIN_LINE.match(line)):
            chains.append(m.group(1))
        elif name is not None and line.startswith("-A "):
            rules.append(line)


def cleanup_script(save_output: str, *, kubelet_chains: bool = False) -> str:
    """The ``iptables-restore --noflush`` input that undoes kube-proxy's chains in ``save_output``.

    Per table: declare each of our chains (which flushes it), delete each rule of
    another chain that jumps into ours, then delete our chains. Empty when there is
    nothing to remove.
    """
    out: list[str] = []
    for table in _tables(save_output):
        ours = [
            c
            for c in table.chains
            if c.startswith("KUBE-") and (kubelet_chains or c not in KUBELET_CHAINS)
        ]
        if not ours:
            continue
        owned = set(ours)
        out.append(f"*{table.name}")
        out += [f":{chain} - [0:0]" for chain in ours]
        for rule in table.rules:
            source = rule.split(maxsplit=2)[1]
            target = _JUMP_TARGET.search(rule)
            if source not in owned and target is not None and target.group(1) in owned:
                out.append("-D" + rule[2:])
        out += [f"-X {chain}" for chain in ours]
        out.append("COMMIT")
    return "".join(f"{line}\n" for line in out)


def restore_large(family: IPFamily, text: str, *, netns: str | None = None) -> None:
    """:func:`restore` for inputs of tens of megabytes: fed from a temporary file.

    ``run`` encodes its whole input at once, a second copy of it in memory; written
    to a file the text is encoded a buffer at a time.
    """
    if text.strip():
        restore_parts(family, [text], netns=netns)


def restore_parts(family: IPFamily, parts: Iterable[str], *, netns: str | None = None) -> None:
    """:func:`restore_large` of ``"\n".join(parts)``, never holding that text whole."""
    argv = in_netns([f"{command(family)}-restore", "-w", "--noflush"], netns)
    with tempfile.TemporaryFile("w+") as spool:
        for part in parts:
            spool.write(part)
            spool.write("\n")
        spool.seek(0)
        try:
            done = subprocess.run(argv, stdin=spool, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise CommandError(argv, 127, str(exc)) from exc
    if done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr)
