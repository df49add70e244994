"""kube-proxy's metrics, with upstream's names, and the metrics address's other pages.

The metrics are upstream's ``pkg/proxy/metrics`` (``kubeproxy_`` subsystem), with
the same types, buckets, help texts and labels (``ip_family`` where upstream has it),
registered by proxy mode as upstream registers them. They live in a registry of
their own (no process-global state), exposed by ``prometheus_client``, with the
process collector added (``process_resident_memory_bytes`` and friends).

The metrics address (``--metrics-bind-address``) serves, as upstream's does,
``/metrics``, ``/healthz`` (``ok``) and ``/proxyMode``, and one page upstream never
had: ``/rules``, the rules programmed right now, read back from the kernel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from kubenet.model import IPFamily
from kubenet.render import ProxyMode

#: metrics.ExponentialBuckets(0.001, 2, 15): 1 ms to 16 s.
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
#: 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 120..300 s by 30 (upstream's merged buckets).
PROGRAMMING_BUCKETS = (
    0.25,
    0.5,
    *(float(s) for s in range(1, 60)),
    *(float(s) for s in range(60, 120, 5)),
    *(float(s) for s in range(120, 301, 30)),
)


class Metrics:
    """Every metric node-proxy exports, in one registry."""

    def __init__(self, mode: ProxyMode) -> None:
        self.mode = mode
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        family = ["ip_family"]
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            family,
            buckets=SYNC_BUCKETS,
            registry=registry,
        )
        self.last_queued = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            family,
            registry=registry,
        )
        self.last_synced = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            family,
            registry=registry,
        )
        self.endpoint_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            registry=registry,
        )
        self.endpoint_changes = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            registry=registry,
        )
        self.service_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            registry=registry,
        )
        self.service_changes = Counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            registry=registry,
        )
        self.healthz = Counter(
            "kubeproxy_proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            ["code"],
            registry=registry,
        )
        self.livez = Counter(
            "kubeproxy_proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            ["code"],
            registry=registry,
        )
        self.network_programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            family,
            buckets=PROGRAMMING_BUCKETS,
            registry=registry,
        )
        self.no_local_endpoints = Gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            ["ip_family", "traffic_policy"],
            registry=registry,
        )
        self.full_sync_duration: Histogram | None = None
        self.partial_sync_duration: Histogram | None = None
        self.restore_failures: Counter | None = None
        self.partial_restore_failures: Counter | None = None
        self.iptables_rules: Gauge | None = None
        self.iptables_rules_last: Gauge | None = None
        self.nftables_failures: Counter | None = None
        self.nftables_cleanup_failures: Counter | None = None
        if mode is ProxyMode.IPTABLES:
            self.full_sync_duration = Histogram(
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for full resyncs",
                family,
                buckets=SYNC_BUCKETS,
                registry=registry,
            )
            self.partial_sync_duration = Histogram(
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
                family,
                buckets=SYNC_BUCKETS,
                registry=registry,
            )
            self.partial_restore_failures = Counter(
                "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
                "Cumulative proxy iptables partial restore failures",
                family,
                registry=registry,
            )
            self.iptables_rules = Gauge(
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
                ["ip_family", "table"],
                registry=registry,
            )
            self.iptables_rules_last = Gauge(
                "kubeproxy_sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync",
                ["ip_family", "table"],
                registry=registry,
            )
        if mode in (ProxyMode.IPTABLES, ProxyMode.IPVS):
            self.restore_failures = Counter(
                "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                "Cumulative proxy iptables restore failures",
                family,
                registry=registry,
            )
        if mode is ProxyMode.NFTABLES:
            self.nftables_failures = Counter(
                "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                "Cumulative proxy nftables sync failures",
                family,
                registry=registry,
            )
            self.nftables_cleanup_failures = Counter(
                "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
                "Cumulative proxy nftables cleanup failures",
                family,
                registry=registry,
            )

    # ------------------------------------------------------------------ recording

    def start(self, families: Iterable[IPFamily]) -> None:
        """Show the per-family failure counters at zero from the start."""
        for family in families:
            for counter in (
                self.nftables_failures,
                self.nftables_cleanup_failures,
                self.restore_failures,
                self.partial_restore_failures,
            ):
                if counter is not None:
                    counter.labels(family.value)

    def synced(
        self, families: Iterable[IPFamily], seconds: float, *, full: bool, at: float
    ) -> None:
        for family in families:
            label = family.value
            self.sync_duration.labels(label).observe(seconds)
            which = self.full_sync_duration if full else self.partial_sync_duration
            if which is not None:
                which.labels(label).observe(seconds)
            self.last_synced.labels(label).set(at)

    def failed(self, families: Iterable[IPFamily], *, full: bool) -> None:
        for family in families:
            label = family.value
            if self.nftables_failures is not None:
                self.nftables_failures.labels(label).inc()
            if self.restore_failures is not None:
                self.restore_failures.labels(label).inc()
            if not full and self.partial_restore_failures is not None:
                self.partial_restore_failures.labels(label).inc()

    def queued(self, families: Iterable[IPFamily], at: float) -> None:
        for family in families:
            self.last_queued.labels(family.value).set(at)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


RulesSource = Callable[[], Awaitable[str]]


def metrics_app(metrics: Metrics, rules: RulesSource) -> web.Application:
    """The ``--metrics-bind-address`` server."""

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def proxy_mode(request: web.Request) -> web.Response:
        return web.Response(text=metrics.mode.value, content_type="text/plain")

    async def rules_page(request: web.Request) -> web.Response:
        return web.Response(text=await rules(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/proxyMode", proxy_mode)
    app.router.add_get("/rules", rules_page)
    return app
