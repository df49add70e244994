"""The sync loop: coalesce changes, program them, keep every sync's books.

As upstream's BoundedFrequencyRunner drives syncProxyRules:

* a change asks for a sync (:meth:`Proxier.request`); changes that arrive while one is
  waiting or running are coalesced into the next;
* two syncs start at least ``min_sync_period`` apart;
* every ``sync_period`` a **full** sync re-asserts everything; in between, only what
  changed is written;
* a sync that fails leaves the kernel as it was, is counted, and is retried (after
  ``min_sync_period``, doubling up to ``sync_period``); the retry is a full sync.

After a successful sync: stale UDP conntrack entries are deleted, the health
bookkeeping and the health-check node ports are brought up to date, and the metrics
record the duration, the time and the network programming latency (from the
EndpointSlice controller's trigger times). With ``dry_run`` nothing is applied and
each sync logs what it would have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from kubenet.dataplane import conntrack
from kubenet.model import IPFamily, ServicePort, ServicePortName
from kubenet.node.backends import ApplyError, Backend, SyncReport
from kubenet.node.changes import Changes, ClusterCache
from kubenet.node.health import HealthCheck, ProxyHealth, ServiceHealthServers, health_checks
from kubenet.node.metrics import Metrics
from kubenet.node.stale import stale_flows
from kubenet.options import RenderOptions
from kubenet.translate import NodeInfo

log = logging.getLogger(__name__)

OptionsFor = Callable[[NodeInfo], Mapping[IPFamily, RenderOptions]]

#: Services translated per batch when a first sync is streamed to the kernel.
STREAM_BATCH = 250


@dataclass
class SyncRecord:
    """One sync's figures, for logs, tests and benchmarks (not its scripts: they can be
    tens of megabytes)."""

    started: float
    seconds: float
    full: bool
    ok: bool
    services: int
    ports: int
    transactions: int = 0
    bytes: int = 0
    changed: int = 0


class Proxier:
    """Keeps the kernel's rules in step with the cluster cache."""

    def __init__(
        self,
        cache: ClusterCache,
        backend: Backend,
        options_for: OptionsFor,
        *,
        sync_period: float,
        min_sync_period: float,
        health: ProxyHealth,
        metrics: Metrics,
        health_servers: ServiceHealthServers | None = None,
        dry_run: bool = False,
        verbosity: int = 0,
        delete_conntrack: bool = True,
    ) -> None:
        self.cache = cache
        self.backend = backend
        self.options_for = options_for
        self.sync_period = sync_period
        self.min_sync_period = min_sync_period
        self.health = health
        self.metrics = metrics
        self.health_servers = health_servers
        self.dry_run = dry_run
        self.verbosity = verbosity
        self.delete_conntrack = delete_conntrack and not dry_run
        self._wake = asyncio.Event()
        self._dirty = False
        self._needs_full = True
        self._last_start = -math.inf
        self._last_full = -math.inf
        self._retry_at = math.inf
        self._retry_delay = 0.0
        self._unsynced = Changes()
        self._checks: dict[tuple[str, str], HealthCheck] = {}
        self._no_local: dict[ServicePortName, tuple[tuple[bool, bool], ...]] = {}
        self._seen_events = (0, 0)
        self.syncs = 0
        self.failures = 0
        self.last: SyncRecord | None = None
        #: Set after the first successful sync.
        self.synced = asyncio.Event()
        #: Notified after every sync, successful or not (tests and benchmarks wait on it).
        self.after_sync: Callable[[SyncRecord], None] = lambda record: None

    # -------------------------------------------------------------------- requests

    def request(self) -> None:
        """Something changed: sync soon (the cache's change callback)."""
        now = time.time()
        services, slices = self.cache.service_events, self.cache.slice_events
        seen_services, seen_slices = self._seen_events
        if services > seen_services:
            self.metrics.service_changes.inc(services - seen_services)
        if slices > seen_slices:
            self.metrics.endpoint_changes.inc(slices - seen_slices)
        self._seen_events = (services, slices)
        self.metrics.service_changes_pending.set(self.cache.pending_services)
        self.metrics.endpoint_changes_pending.set(self.cache.pending_services)
        if self.cache.initialized:
            self.health.queued_update()
            self.metrics.queued(self.backend.families, now)
        self._dirty = True
        self._wake.set()

    # ------------------------------------------------------------------------- loop

    async def run(self) -> None:
        """Sync forever (until cancelled), once the cache has been listed."""
        while not (self.cache.initialized and self.cache.node_synced):
            self._wake.clear()
            await self._wake.wait()
        log.info("Services and EndpointSlices listed; starting to sync %s rules", self.mode)
        while True:
            now = time.monotonic()
            due_full = self._last_full + self.sync_period
            due_change = self._last_start + self.min_sync_period if self._dirty else math.inf
            due = min(due_full, due_change, self._retry_at)
            if due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(due - now, 3600))
                continue
            idle = not (self._needs_full or self._dirty)
            if now >= due_full and idle and not self.backend.periodic_full_sync:
                self._last_full = now  # nothing to do this period (see the backend)
                continue
            periodic = now >= due_full and self.backend.periodic_full_sync
            await self.sync(full=self._needs_full or periodic)

    @property
    def mode(self) -> str:
        return self.backend.mode.value

    async def sync(self, *, full: bool) -> SyncRecord:
        """One sync: drain the cache, program the changes, then the after-work."""
        start = time.monotonic()
        self._last_start = start
        self._dirty = False
        streamed = full and not self.synced.is_set() and not self.dry_run
        changes = self.cache.drain(limit=STREAM_BATCH if streamed else None)
        self.metrics.service_changes_pending.set(0)
        self.metrics.endpoint_changes_pending.set(0)
        if changes.node_changed:
            options = self.options_for(self.cache.node)
            if dict(options) != self.backend.options:
                log.info("node %s changed: rendering every rule again", self.cache.node_name)
                self.backend.configure(options)
                full = True
        self._unsynced.merge(changes)
        port_changes: dict[ServicePortName, ServicePort | None] = {
            name: change.new for name, change in changes.ports.items()
        }
        families = self.backend.families
        report: SyncReport | None = None
        # A full sync makes hundreds of thousands of long-lived objects, none of them in
        # cycles; the cyclic collector would scan the growing heap again and again
        # (doubling a cold sync's time), so it waits, and what the first sync built is
        # then frozen out of later collections (once: frozen cyclic garbage is kept).
        paused = full and gc.isenabled()
        if paused:
            gc.disable()
        try:
            if streamed:
                report = await self.backend.stream(
                    self._batches(port_changes, changes), self.cache.service_map
                )
            if report is None:
                if self.cache.pending_services:
                    rest = self.cache.drain()
                    changes.merge(rest)
                    self._unsynced.merge(rest)
                    port_changes.update({n: c.new for n, c in rest.ports.items()})
                report = await self.backend.sync(
                    port_changes, self.cache.service_map, full=full, dry_run=self.dry_run
                )
        except ApplyError as exc:
            return self._failed(start, full, changes, exc)
        finally:
            if paused:
                gc.enable()
                if not self.synced.is_set():
                    gc.freeze()
        now_wall = time.time()
        seconds = time.monotonic() - start
        self.syncs += 1
        self._needs_full = False
        self._retry_at = math.inf
        self._retry_delay = 0.0
        if full:
            self._last_full = start
        done, self._unsynced = self._unsynced, Changes()
        if self.dry_run:
            self._log_dry_run(report)
        elif self.delete_conntrack:
            await self._delete_stale(done)
        self.health.updated()
        self.metrics.synced(families, seconds, full=full, at=now_wall)
        for trigger in done.trigger_times:
            if now_wall >= trigger:
                for family in families:
                    self.metrics.network_programming.labels(family.value).observe(
                        now_wall - trigger
                    )
        await self._sync_health_checks(done, full)
        self._count_no_local(done, full)
        record = SyncRecord(
            start,
            seconds,
            full,
            True,
            changes.services,
            len(changes.ports),
            report.count,
            report.bytes,
            report.changed,
        )
        del report  # the scripts go now, not at the next sync
        self._log_sync(record)
        self.last = record
        self.synced.set()
        self.after_sync(record)
        return record

    def _batches(
        self, first: dict[ServicePortName, ServicePort | None], changes: Changes
    ) -> Iterator[dict[ServicePortName, ServicePort | None]]:
        """The first batch, then the rest of the cache a batch at a time (translated lazily)."""
        yield first
        while self.cache.pending_services:
            batch = self.cache.drain(limit=STREAM_BATCH)
            changes.merge(batch)
            self._unsynced.merge(batch)
            yield {name: change.new for name, change in batch.ports.items()}

    def _failed(self, start: float, full: bool, changes: Changes, exc: ApplyError) -> SyncRecord:
        self.failures += 1
        self.metrics.failed(self.backend.families, full=full)
        self._needs_full = True
        step = max(self.min_sync_period, 1.0)
        self._retry_delay = min(self._retry_delay * 2 or step, max(self.sync_period, step))
        self._retry_at = time.monotonic() + self._retry_delay
        log.error(
            "%s sync failed (%s); the previous rules stay; retrying in %.1fs with a full sync",
            "full" if full else "partial",
            exc,
            self._retry_delay,
        )
        record = SyncRecord(
            start, time.monotonic() - start, full, False, changes.services, len(changes.ports)
        )
        self.last = record
        self.after_sync(record)
        return record

    # --------------------------------------------------------------- after a sync

    async def _delete_stale(self, done: Changes) -> None:
        matches = stale_flows(done.ports)
        if not matches:
            return
        try:
            deleted = await conntrack.delete(matches)
        except Exception as exc:  # never let conntrack trouble stop the proxy
            log.warning("could not delete stale conntrack entries: %s", exc)
            return
        if deleted:
            log.info(
                "deleted %d stale UDP conntrack entries (%s)",
                deleted,
                "; ".join(str(m) for m in matches[:5]) + ("; ..." if len(matches) > 5 else ""),
            )

    async def _sync_health_checks(self, done: Changes, full: bool) -> None:
        if self.health_servers is None:
            return
        touched = {
            (name.namespace, name.name)
            for name, change in done.ports.items()
            if any(
                p is not None and p.health_check_node_port is not None
                for p in (change.old, change.new)
            )
        }
        if full:
            checks = health_checks(self.cache.ports())
        elif touched:
            checks = dict(self._checks)
            for key in touched:
                checks.pop(key, None)
            checks.update(health_checks(self.cache.service_ports(touched)))
        else:
            return
        self._checks = checks
        await self.health_servers.sync(checks)

    def _count_no_local(self, done: Changes, full: bool) -> None:
        """kubeproxy_sync_proxy_rules_no_local_endpoints_total, kept up to date by port."""
        if full:
            self._no_local = {
                p.name: _no_local(p, self.backend.families) for p in self.cache.ports()
            }
        else:
            for name, change in done.ports.items():
                if change.new is None:
                    self._no_local.pop(name, None)
                else:
                    self._no_local[name] = _no_local(change.new, self.backend.families)
        for i, family in enumerate(self.backend.families):
            for j, policy in enumerate(("internal", "external")):
                count = sum(1 for flags in self._no_local.values() if flags[i][j])
                self.metrics.no_local_endpoints.labels(family.value, policy).set(count)

    # ---------------------------------------------------------------------- logging

    def _log_sync(self, record: SyncRecord) -> None:
        level = logging.INFO if self.verbosity >= 2 or record.full else logging.DEBUG
        log.log(
            level,
            "%s sync of %s rules took %.3fs: %d services translated, %d ports changed, "
            "%d transactions, %d bytes, %d changed",
            "full" if record.full else "partial",
            self.mode,
            record.seconds,
            record.services,
            record.ports,
            record.transactions,
            record.bytes,
            record.changed,
        )

    def _log_dry_run(self, report: SyncReport) -> None:
        limit = None if self.verbosity >= 4 else 100
        for tool, text in report.transactions:
            lines = text.splitlines()
            shown = lines if limit is None else lines[:limit]
            more = len(lines) - len(shown)
            log.info(
                "dry run: %s sync would apply with %s:\n%s%s",
                "full" if report.full else "partial",
                tool,
                "\n".join(shown),
                f"\n... ({more} more lines; -v=4 shows all)" if more else "",
            )
        if not report.transactions:
            log.info("dry run: nothing to change")


def _no_local(port: ServicePort, families: tuple[IPFamily, ...]) -> tuple[tuple[bool, bool], ...]:
    """Per family: (internal, external) Local policy with endpoints, but none on this node.

    Upstream's count, per family proxier: such a Service drops the traffic of that kind.
    """
    out = []
    for family in families:
        if port.cluster_ip(family) is None:
            out.append((False, False))
            continue
        view = port.for_family(family)
        stranded = view.has_any_endpoints and not view.local_endpoints
        out.append(
            (stranded and view.internal_policy_local, stranded and view.external_policy_local)
        )
    return tuple(out)
