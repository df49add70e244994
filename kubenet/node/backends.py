"""One small adapter per proxy mode: render what changed, apply it, read it back, clean up.

A :class:`Backend` is what the sync loop knows of a proxy mode. ``sync`` takes the
service ports that changed since the last sync (and, for modes that render the whole
map every time, the map itself) and programs the kernel; a full sync re-asserts
everything. A failure raises :class:`ApplyError` and leaves the kernel as the last
successful sync left it (every apply is one kernel transaction per family); the
backend's own idea of the rules has moved on, so the next attempt must be a full
sync, which the sync loop makes it.

* :class:`NftablesBackend` keeps an :class:`~kubenet.render.nftables_incremental.IncrementalTable`
  per family: a partial sync writes only the elements, chains and sets that changed,
  in one ``nft -f`` transaction (through libnftables, no process to start); a full
  sync refills the existing table in one transaction (keeping the affinity sets'
  entries) or, when there is none, loads it in parts (split when large, the maps that
  make a service reachable last). The very first sync into a kernel without our
  table is streamed in batches (:meth:`NftablesBackend.stream`).
* :class:`IptablesBackend` renders with upstream's partial sync (only the chains of
  changed ports, shared chains whole) and ``iptables-restore --noflush -w`` (the
  xtables lock is waited for), ensuring the base-chain jumps on full syncs; a full
  sync also deletes service chains the kernel has that the plan has not.
* :class:`IpvsBackend` renders the whole map and lets :func:`kubenet.dataplane.ipvs.apply`
  change only the virtual and real servers, sets and addresses that differ.

:func:`cleanup` removes what any mode made.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from kubenet.dataplane import iptables as iptables_dp
from kubenet.dataplane import nftables as nftables_dp
from kubenet.dataplane.command import CommandError
from kubenet.model import IPFamily, Protocol, ServiceMap, ServicePort, ServicePortName
from kubenet.options import RenderOptions
from kubenet.render import ProxyMode
from kubenet.render import iptables as iptables_render
from kubenet.render.nft_ruleset import (
    NftSet,
    NftSyntaxError,
    load_scripts,
    parse_script,
    resync_script,
)
from kubenet.render.nftables_incremental import IncrementalTable

log = logging.getLogger(__name__)

Changes = Mapping[ServicePortName, ServicePort | None]

#: The nftables maps that make a service reachable: loaded last when a table is loaded in parts.
DISPATCH_MAPS = (
    "no-endpoint-services",
    "no-endpoint-nodeports",
    "cluster-ips",
    "service-nodeports",
    "service-ips",
)


#: Scripts up to this many characters go through libnftables in this process.
SMALL_SCRIPT = 256 * 1024


class ApplyError(RuntimeError):
    """The kernel refused an update (the message carries the tool's error)."""


@dataclass
class SyncReport:
    """What one sync applied (or, in a dry run, would have applied)."""

    full: bool
    #: Each transaction as (the tool, its input).
    transactions: list[tuple[str, str]] = field(default_factory=list)
    #: Elements (nftables), rules (iptables) or operations (IPVS) changed.
    changed: int = 0
    #: Transactions whose input was written out without being kept whole, as (the
    #: tool, its size in bytes): a full iptables sync of a large cluster.
    unkept: list[tuple[str, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Transactions applied (or, in a dry run, that would be)."""
        return len(self.transactions) + len(self.unkept)

    @property
    def bytes(self) -> int:
        # Not text.encode() for ASCII: for a full iptables sync that is a copy of 36 MB.
        kept = sum(
            len(text) if text.isascii() else len(text.encode()) for _, text in self.transactions
        )
        return kept + sum(size for _, size in self.unkept)

    @property
    def lines(self) -> int:
        return sum(text.count("\n") for _, text in self.transactions)


class Backend(abc.ABC):
    """A proxy mode, as the sync loop drives it."""

    mode: ClassVar[ProxyMode]

    def __init__(self, options: Mapping[IPFamily, RenderOptions]) -> None:
        self.options = dict(options)

    @property
    def families(self) -> tuple[IPFamily, ...]:
        return tuple(self.options)

    def configure(self, options: Mapping[IPFamily, RenderOptions]) -> None:
        """Take new options (the node changed); the next sync must be full."""
        self.options = dict(options)

    @abc.abstractmethod
    async def sync(
        self,
        changes: Changes,
        service_map: Callable[[], ServiceMap],
        *,
        full: bool,
        dry_run: bool = False,
    ) -> SyncReport:
        """Program ``changes`` (everything, if ``full``); raise :class:`ApplyError` on failure."""

    @abc.abstractmethod
    async def read_back(self) -> str:
        """The rules as the kernel has them now."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook
        """Open kernel handles early, in the process's own network namespace."""

    @property
    def periodic_full_sync(self) -> bool:
        """Whether the sync period's sync should rewrite everything (see IptablesBackend)."""
        return True

    async def stream(
        self, batches: Iterator[Changes], service_map: Callable[[], ServiceMap]
    ) -> SyncReport | None:
        """A first full sync fed in batches, applied while the next batch is prepared.

        For a cold start: the kernel tool loads one batch while the caller translates
        the next. None when the mode cannot (then nothing was consumed or applied).
        """
        return None


async def _in_thread(fn: Callable[[], None]) -> None:
    """Run a blocking kernel call off the event loop; turn its failure into ApplyError."""
    await _started_in_thread(fn)


def _started_in_thread(fn: Callable[[], None]) -> asyncio.Task[None]:
    """Start a blocking kernel call on a worker thread now; await its outcome later.

    Now, not at the next await: a task wrapping ``asyncio.to_thread`` would not reach
    the thread until the caller yields, and a caller that goes on computing first (the
    first sync rendering its next batch) would get no overlap at all.
    """
    return asyncio.ensure_future(
        _apply_errors(asyncio.get_running_loop().run_in_executor(None, fn))
    )


async def _apply_errors(call: Awaitable[None]) -> None:
    try:
        await call
    except (CommandError, OSError) as exc:
        raise ApplyError(str(exc)) from exc


# --------------------------------------------------------------------------- nftables


def _dynamic(s: NftSet) -> bool:
    return "dynamic" in s.flags


class NftablesBackend(Backend):
    mode = ProxyMode.NFTABLES

    def __init__(
        self, options: Mapping[IPFamily, RenderOptions], *, max_elements: int = 100_000
    ) -> None:
        super().__init__(options)
        self.max_elements = max_elements
        self._tables = {family: IncrementalTable(o) for family, o in self.options.items()}
        self._reload = False
        self._nft = nftables_dp.NftContext()

    def configure(self, options: Mapping[IPFamily, RenderOptions]) -> None:
        super().configure(options)
        self._tables = {family: IncrementalTable(o) for family, o in self.options.items()}
        self._reload = True

    def prepare(self) -> None:
        # libnftables waits for the kernel with select(), which aborts the process for
        # a descriptor above 1023: open its netlink socket now, while descriptors are
        # few (health-check ports may later take a thousand).
        self._nft.open()

    def table(self, family: IPFamily) -> IncrementalTable:
        return self._tables[family]

    async def sync(
        self,
        changes: Changes,
        service_map: Callable[[], ServiceMap],
        *,
        full: bool,
        dry_run: bool = False,
    ) -> SyncReport:
        if self._reload:
            # Fresh tables after new options: every port goes in again.
            changes = {p.name: p for p in service_map()}
            self._reload = False
            full = True
        report = SyncReport(full)
        deltas = [table.update(changes, script=not full) for table in self._tables.values()]
        report.changed = sum(d.elements for d in deltas)
        if not full:
            script = "".join(d.script for d in deltas)
            if script:
                report.transactions.append(("nft", script))
        else:
            for family, table in self._tables.items():
                report.transactions += await self._full(family, table)
        if not dry_run:
            for _, script in report.transactions:
                await _in_thread(partial(self._load, script))
        return report

    async def stream(
        self, batches: Iterator[Changes], service_map: Callable[[], ServiceMap]
    ) -> SyncReport | None:
        """Load fresh tables a batch at a time: nft loads one batch while the next is made.

        Only where the kernel has no table of ours yet: over an existing table a full
        sync must be one transaction, so that no packet sees it half rewritten. Each
        batch is an ordinary update of the tables, so a Service appears whole, in one
        transaction, or not at all. The batches go through libnftables in a worker
        thread (which keeps the table's definitions between transactions: a batch loads
        in half the time an ``nft`` process takes), while this thread makes the next.
        """
        for family in self._tables:
            try:
                listed = await asyncio.to_thread(nftables_dp.list_skeleton, family)
            except (CommandError, OSError) as exc:
                raise ApplyError(str(exc)) from exc
            if listed is not None:
                return None
        report = SyncReport(True)
        loading: asyncio.Task[None] | None = None

        async def submit(script: str) -> float:
            """Queue a transaction after the one loading; the seconds spent waiting."""
            nonlocal loading
            waited = time.monotonic()
            if loading is not None:
                await loading
            report.transactions.append(("nft", script))
            loading = _started_in_thread(partial(self._nft.load, script))
            return time.monotonic() - waited

        try:
            # The tables themselves first (chains, empty sets), then the batches.
            await submit("".join(t.ruleset().script() for t in self._tables.values()))
            if self._reload:
                # New options took effect: what was drained already goes in first.
                self._reload = False
                batches = itertools.chain([{p.name: p for p in service_map()}], batches)
            while True:
                began = time.monotonic()
                batch = next(batches, None)
                if batch is None:
                    break
                made = time.monotonic()
                deltas = [table.update(batch) for table in self._tables.values()]
                report.changed += sum(d.elements for d in deltas)
                script = "".join(d.script for d in deltas)
                rendered = time.monotonic()
                waited = await submit(script) if script else 0.0
                log.debug(
                    "first sync: %d ports translated in %.3fs, rendered in %.3fs; "
                    "%.3fs waiting for nft",
                    len(batch),
                    made - began,
                    rendered - made,
                    waited,
                )
        finally:
            if loading is not None:
                await loading
        return report

    def _load(self, script: str) -> None:
        """Small updates in this process (no nft start-up), large loads in an nft process.

        A large script costs nft as much memory as the table it describes; in a
        separate process that memory is given back as soon as the load is done.
        """
        if len(script) <= SMALL_SCRIPT:
            self._nft.load(script)
        else:
            nftables_dp.load(script)

    async def _full(self, family: IPFamily, table: IncrementalTable) -> list[tuple[str, str]]:
        new = table.ruleset()
        try:
            listed = await asyncio.to_thread(nftables_dp.list_skeleton, family)
        except (CommandError, OSError) as exc:
            raise ApplyError(str(exc)) from exc
        if listed is None:
            scripts = load_scripts(new, self.max_elements, last=DISPATCH_MAPS)
            return [("nft", s) for s in scripts]
        try:
            kernel = parse_script(listed)
        except NftSyntaxError as exc:
            # A table we cannot read (another version's): replace it whole.
            log.warning("cannot read the %s kube-proxy table (%s); replacing it", family, exc)
            return [("nft", new.script())]
        return [("nft", resync_script(new, kernel, keep=_dynamic))]

    async def read_back(self) -> str:
        texts = []
        for family in self.families:
            listed = await asyncio.to_thread(nftables_dp.list_table, family)
            if listed:
                texts.append(listed)
        return "".join(texts)


# --------------------------------------------------------------------------- iptables

_SERVICE_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}) ", re.M)
#: Stands for "chains found in the kernel" in a previous plan made from iptables-save.
_KERNEL = ServicePortName("", "", "kernel", Protocol.TCP)


class IptablesBackend(Backend):
    mode = ProxyMode.IPTABLES

    def __init__(self, options: Mapping[IPFamily, RenderOptions]) -> None:
        super().__init__(options)
        self._caches = {family: iptables_render.ServiceRulesCache() for family in self.options}
        #: Per family: whether the kernel holds what the cache holds (a sync applied).
        self._synced: dict[IPFamily, bool] = {}

    def configure(self, options: Mapping[IPFamily, RenderOptions]) -> None:
        super().configure(options)
        self._caches = {family: iptables_render.ServiceRulesCache() for family in self.options}
        self._synced = {}

    async def sync(
        self,
        changes: Changes,
        service_map: Callable[[], ServiceMap],
        *,
        full: bool,
        dry_run: bool = False,
    ) -> SyncReport:
        report = SyncReport(full)
        current: ServiceMap | None = None
        for family, options in self.options.items():
            cache = self._caches[family]
            synced = self._synced.get(family, False)
            plan = None
            if not full and synced:
                # Only the changed ports' chains, and shared chains only where a changed
                # port's rules in them changed: one endpoint replaced costs the same at
                # 10 Services as at 10,000.
                plan = iptables_render.render_changes(changes, options, cache)
            if plan is None:
                # A full sync, also deleting service chains the kernel has that the plan
                # has not (a previous run's, or ours from before).
                found = await self._kernel_chains(family)
                previous = iptables_render.IptablesPlan(
                    family,
                    options,
                    "",
                    (),
                    chains_by_service=(*cache.chains_by_service(), (_KERNEL, found)),
                )
                self._synced[family] = False
                current = current or service_map()
                if not dry_run:
                    # Several restores (one large one costs iptables-nft minutes), each
                    # written to the tool's input file part by part: the whole text (36
                    # MB at 10,000 Services) is never held.
                    plan, restores = iptables_render.render_batched(
                        current, options, previous=previous, cache=cache
                    )
                    for parts in restores:
                        size = sum(len(p) + 1 for p in parts)
                        report.unkept.append((_restore_tool(family), size))
                        report.changed += sum(_rule_lines(p) for p in parts)
                    try:
                        await _apply_batched(family, restores)
                        await _in_thread(partial(_ensure_jumps, plan))
                    except ApplyError:
                        self._caches[family] = iptables_render.ServiceRulesCache()
                        raise
                    self._synced[family] = True
                    continue
                plan = iptables_render.render(current, options, previous=previous, cache=cache)
            if plan.restore:
                report.transactions.append((_restore_tool(family), plan.restore))
            report.changed += _rule_lines(plan.restore)
            if not dry_run and plan.restore:
                try:
                    await _in_thread(partial(_restore_partial, plan))
                except ApplyError:
                    # The cache went ahead of the kernel: start again from a full render.
                    self._synced[family] = False
                    self._caches[family] = iptables_render.ServiceRulesCache()
                    raise
            self._synced[family] = True
        return report

    @property
    def periodic_full_sync(self) -> bool:
        """Not in upstream's large cluster mode (over 1,000 endpoints).

        A full iptables-restore of a large nat table takes minutes with iptables-nft
        (10,000 Services: five and a half here), longer than a sync period; newest
        upstream skips its periodic full syncs in large clusters for the same reason.
        Failures and node changes still bring full syncs.
        """
        contexts = (cache.context for cache in self._caches.values())
        return not any(ctx is not None and ctx.large_cluster for ctx in contexts)

    async def _kernel_chains(self, family: IPFamily) -> tuple[str, ...]:
        """Service chains in the kernel (a previous run's too), to delete the stale ones.

        Not knowing them is no reason to fail a sync: iptables-save can fail on a
        very large table (iptables 1.8.9 crashed on 10,000 Services here).
        """
        try:
            saved = await asyncio.to_thread(iptables_dp.save, family, table="nat")
        except (CommandError, OSError) as exc:
            log.warning("cannot read the %s nat table (%s); stale chains stay", family, exc)
            return ()
        return tuple(_SERVICE_CHAIN.findall(saved))

    async def read_back(self) -> str:
        texts = []
        for family in self.families:
            saved = await asyncio.to_thread(iptables_dp.save, family)
            texts.append(_ours(saved))
        return "".join(texts)


def _restore_tool(family: IPFamily) -> str:
    return f"{iptables_dp.command(family)}-restore"


def _rule_lines(text: str) -> int:
    """Rules written and chains deleted (counted without splitting megabytes of text)."""
    return (
        text.count("\n-A ")
        + text.count("\n-X ")
        + (text.startswith("-A ") or text.startswith("-X "))
    )


#: Batches of a full iptables sync restored at once (iptables-nft parses in parallel;
#: iptables-legacy takes turns on the xtables lock).
PARALLEL_RESTORES = 2


async def _apply_batched(family: IPFamily, restores: list[list[str]]) -> None:
    """The first restore (it creates what the others use), the middle ones a few at a
    time (disjoint chains: their order does not matter), then the last (shared chains)."""

    async def one(parts: list[str]) -> None:
        await _in_thread(partial(iptables_dp.restore_parts, family, parts))

    if len(restores) < 3:
        for parts in restores:
            await one(parts)
        return
    await one(restores[0])
    slots = asyncio.Semaphore(PARALLEL_RESTORES)

    async def limited(parts: list[str]) -> None:
        async with slots:
            await one(parts)

    # Every restore runs to its end (a thread cannot be stopped) before a failure is
    # reported, so the retry never overlaps one of them.
    outcomes = await asyncio.gather(
        *(limited(parts) for parts in restores[1:-1]), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    await one(restores[-1])


def _ensure_jumps(plan: iptables_render.IptablesPlan) -> None:
    for jump in plan.jumps:
        iptables_dp.ensure_jump(plan.family, jump)


def _restore_partial(plan: iptables_render.IptablesPlan) -> None:
    """A partial sync's restore (full syncs go through :func:`_apply_batched`, and
    only they ensure the base-chain jumps)."""
    if len(plan.restore) > SMALL_SCRIPT:
        iptables_dp.restore_large(plan.family, plan.restore)
    else:
        iptables_dp.restore(plan.family, plan.restore)


def _ours(saved: str) -> str:
    """The tables of an iptables-save output, cut to kube-proxy's chains and jumps."""
    out = []
    for line in saved.splitlines():
        if line.startswith(("*", "COMMIT")) or "KUBE-" in line:
            out.append(line)
    # Drop tables where nothing of ours is left.
    text = "\n".join(out)
    text = re.sub(r"^\*\w+\nCOMMIT\n?", "", text + "\n", flags=re.M)
    return text


# ------------------------------------------------------------------------------- IPVS


class IpvsBackend(Backend):
    mode = ProxyMode.IPVS

    def __init__(self, options: Mapping[IPFamily, RenderOptions], *, scheduler: str = "") -> None:
        super().__init__(options)
        self.scheduler = scheduler or "rr"

    async def sync(
        self,
        changes: Changes,
        service_map: Callable[[], ServiceMap],
        *,
        full: bool,
        dry_run: bool = False,
    ) -> SyncReport:
        from kubenet.dataplane import ipvs as ipvs_dp
        from kubenet.render import ipvs as ipvs_render

        report = SyncReport(full)
        current = service_map()
        for options in self.options.values():
            plan = ipvs_render.render(current, options, scheduler=self.scheduler)
            if dry_run:
                report.transactions.append(("ipvs", plan.text))
                continue
            try:
                result = await asyncio.to_thread(ipvs_dp.apply, plan)
            except (CommandError, OSError, ipvs_dp.IpvsUnavailable) as exc:
                raise ApplyError(str(exc)) from exc
            report.changed += len(result.operations)
            text = "".join(f"{op}\n" for op in result.operations) + result.ipset_script
            report.transactions.append(("ipvs", text))
        return report

    async def read_back(self) -> str:
        from kubenet.dataplane.command import run

        texts = []
        for argv in (["ipvsadm-save", "-n"], ["ipset", "list"], ["iptables-save"]):
            done = await asyncio.to_thread(run, argv, check=False)
            texts.append(done.stdout if done.returncode == 0 else f"# {argv[0]}: {done.stderr}")
        return "\n".join(texts)


def missing_support(mode: ProxyMode) -> str | None:
    """Why ``mode`` cannot run on this kernel, or None."""
    if mode is ProxyMode.IPVS:
        from kubenet.dataplane import ipvs as ipvs_dp

        return ipvs_dp.missing_ipvs()
    return None


def make_backend(
    mode: ProxyMode, options: Mapping[IPFamily, RenderOptions], *, ipvs_scheduler: str = ""
) -> Backend:
    if mode is ProxyMode.NFTABLES:
        return NftablesBackend(options)
    if mode is ProxyMode.IPTABLES:
        return IptablesBackend(options)
    return IpvsBackend(options, scheduler=ipvs_scheduler)


# ---------------------------------------------------------------------------- cleanup


def cleanup(*, netns: str | None = None) -> list[str]:
    """Remove every table, chain, rule, set and IPVS entry any mode made; return problems.

    nftables: both ``kube-proxy`` tables. iptables (both families): every ``KUBE-``
    chain and the jumps into them; the kubelet's own chains too, unless a kubelet
    looks after this node (its canary chain exists), as upstream leaves them to it.
    IPVS: the virtual servers, ``kube-ipvs0`` and the ipsets.
    """
    problems: list[str] = []

    def attempt(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:
            problems.append(f"{what}: {exc}")

    attempt("nftables", lambda: nftables_dp.cleanup(netns=netns))
    for family in IPFamily:
        kubelet_chains = not _kubelet_present(family, netns)
        attempt(
            iptables_dp.command(family),
            partial(iptables_dp.cleanup, family, netns=netns, kubelet_chains=kubelet_chains),
        )

    def ipvs() -> None:
        from kubenet.dataplane import ipvs as ipvs_dp

        # Without IPVS and without the ipset tool the mode cannot have run here.
        if shutil.which("ipset") is None and ipvs_dp.missing_ipvs(netns) is not None:
            return
        ipvs_dp.cleanup(netns=netns)

    attempt("ipvs", ipvs)
    return problems


def _kubelet_present(family: IPFamily, netns: str | None) -> bool:
    try:
        saved = iptables_dp.save(family, netns=netns)
    except CommandError:
        return False
    return ":KUBE-KUBELET-CANARY " in saved
