"""The sync loop: coalescing, the min and max periods, failures, node changes, bookkeeping.

The backend here records what it is asked to program (and fails on request): the
subject is the loop's policy, not a kernel. Kernels are the business of
tests/kernel/run and of the backend tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

from kubenet.model import IPFamily, ServiceMap, ServicePort, ServicePortName
from kubenet.node.backends import ApplyError, Backend, SyncReport
from kubenet.node.changes import ClusterCache
from kubenet.node.config import ProxyConfig
from kubenet.node.daemon import render_options
from kubenet.node.health import ProxyHealth
from kubenet.node.metrics import Metrics
from kubenet.node.proxier import Proxier
from kubenet.render import ProxyMode
from kubenet.translate import NodeInfo
from kubenet.watch import ADDED, MODIFIED, Delta
from tests.node.support import endpoint_slice, eventually, node, run, service

FAMILIES = (IPFamily.IPV4,)


@dataclass
class Call:
    at: float
    full: bool
    changes: dict[ServicePortName, ServicePort | None]
    ports: int


class RecordingBackend(Backend):
    mode = ProxyMode.NFTABLES

    def __init__(self) -> None:
        super().__init__(render_options(ProxyConfig(), NodeInfo("node-a"), FAMILIES))
        self.calls: list[Call] = []
        self.configured = 0
        self.fail_next = 0

    def configure(self, options: Mapping[IPFamily, object]) -> None:  # type: ignore[override]
        super().configure(options)  # type: ignore[arg-type]
        self.configured += 1

    async def sync(
        self,
        changes: Mapping[ServicePortName, ServicePort | None],
        service_map: Callable[[], ServiceMap],
        *,
        full: bool,
        dry_run: bool = False,
    ) -> SyncReport:
        self.calls.append(Call(time.monotonic(), full, dict(changes), len(service_map())))
        if self.fail_next:
            self.fail_next -= 1
            raise ApplyError("nft: Could not process rule: No such file or directory")
        return SyncReport(full, [("nft", "add element ...\n")], len(changes))

    async def read_back(self) -> str:
        return ""


def _delta(kind: str, obj: dict[str, object]) -> Delta:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    return Delta(kind, f"{meta['namespace']}/{meta['name']}", obj)


@dataclass
class Loop:
    cache: ClusterCache
    backend: RecordingBackend
    proxier: Proxier
    metrics: Metrics
    health: ProxyHealth


def _loop(sync_period: float = 30.0, min_sync_period: float = 0.0) -> Loop:
    cache = ClusterCache("node-a")
    backend = RecordingBackend()
    metrics = Metrics(ProxyMode.NFTABLES)
    health = ProxyHealth(2 * sync_period, FAMILIES, lambda: cache.node_object)
    proxier = Proxier(
        cache,
        backend,
        lambda n: render_options(ProxyConfig(), n, FAMILIES),
        sync_period=sync_period,
        min_sync_period=min_sync_period,
        health=health,
        metrics=metrics,
        delete_conntrack=False,
    )
    cache.on_change = proxier.request
    return Loop(cache, backend, proxier, metrics, health)


def _start(loop: Loop) -> None:
    loop.cache.on_node([Delta(ADDED, "node-a", node("node-a", "10.180.0.1"))], True)
    loop.cache.on_services([_delta(ADDED, service("web", "10.96.0.10"))], True)
    loop.cache.on_slices([_delta(ADDED, endpoint_slice("web", ["10.244.1.2"]))], True)


def _scale(loop: Loop, *ips: str, **kwargs: object) -> None:
    loop.cache.on_slices([_delta(MODIFIED, endpoint_slice("web", ips, **kwargs))], False)  # type: ignore[arg-type]


async def _running(loop: Loop) -> asyncio.Task[None]:
    task = asyncio.create_task(loop.proxier.run())
    await asyncio.wait_for(loop.proxier.synced.wait(), 5)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_nothing_syncs_before_the_lists_and_the_first_sync_is_full() -> None:
    loop = _loop()

    async def scenario() -> None:
        task = asyncio.create_task(loop.proxier.run())
        loop.cache.on_services([_delta(ADDED, service("web", "10.96.0.10"))], True)
        await asyncio.sleep(0.1)
        assert loop.backend.calls == []  # slices and the node not listed yet
        loop.cache.on_slices([], True)
        loop.cache.on_node([], True)
        await asyncio.wait_for(loop.proxier.synced.wait(), 5)
        await _stop(task)
        (call,) = loop.backend.calls
        assert call.full and call.ports == 1

    run(scenario())


def test_changes_are_coalesced_and_syncs_kept_apart() -> None:
    loop = _loop(min_sync_period=0.3)
    _start(loop)

    async def scenario() -> None:
        task = await _running(loop)
        first = loop.backend.calls[0].at
        for n in range(2, 7):
            _scale(loop, *(f"10.244.1.{i}" for i in range(2, n + 1)))
            await asyncio.sleep(0.01)
        await eventually(lambda: len(loop.backend.calls) == 2, 2)
        await asyncio.sleep(0.4)
        await _stop(task)
        assert len(loop.backend.calls) == 2
        second = loop.backend.calls[1]
        assert not second.full
        assert second.at - first >= 0.29  # timer granularity
        (change,) = second.changes.values()
        assert change is not None and len(change.endpoints) == 5  # the last of the five

    run(scenario())


def test_a_full_sync_every_sync_period() -> None:
    loop = _loop(sync_period=0.2)
    _start(loop)

    async def scenario() -> None:
        task = await _running(loop)
        await asyncio.sleep(0.7)
        await _stop(task)
        fulls = [c for c in loop.backend.calls if c.full]
        assert 3 <= len(fulls) <= 5 and all(c.changes == {} for c in fulls[1:])

    run(scenario())


def test_a_failed_sync_is_counted_and_retried_as_a_full_one() -> None:
    loop = _loop(sync_period=30.0, min_sync_period=0.0)
    _start(loop)

    async def scenario() -> None:
        task = await _running(loop)
        loop.backend.fail_next = 1
        loop.health.queued_update()
        _scale(loop, "10.244.1.2", "10.244.1.3")
        await eventually(lambda: loop.proxier.failures == 1, 2)
        # The retry comes by itself (after min(1s, sync period)), and it is full.
        await eventually(lambda: len(loop.backend.calls) == 3, 3)
        await _stop(task)
        failed, retry = loop.backend.calls[1], loop.backend.calls[2]
        assert not failed.full and retry.full
        metrics = loop.metrics.exposition().decode()
        assert 'kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv4"} 1.0' in (
            metrics
        )
        assert loop.health.healthy and loop.proxier.last is not None and loop.proxier.last.ok

    run(scenario())


def test_a_node_change_reconfigures_the_backend() -> None:
    loop = _loop()
    _start(loop)

    async def scenario() -> None:
        task = await _running(loop)
        configured = loop.backend.configured
        loop.cache.on_node([Delta(MODIFIED, "node-a", node("node-a", "10.180.0.9"))], False)
        await eventually(lambda: len(loop.backend.calls) == 2, 2)
        await _stop(task)
        assert loop.backend.configured == configured + 1
        assert loop.backend.calls[1].full
        assert loop.backend.options[IPFamily.IPV4].node_ips == ("10.180.0.9",)

    run(scenario())


def test_bookkeeping_after_a_sync() -> None:
    loop = _loop()
    _start(loop)

    async def scenario() -> None:
        task = await _running(loop)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3))
        _scale(
            loop,
            "10.244.1.2",
            "10.244.1.5",
            annotations={"endpoints.kubernetes.io/last-change-trigger-time": stamp},
        )
        await eventually(lambda: len(loop.backend.calls) == 2, 2)
        await _stop(task)

    run(scenario())
    text = loop.metrics.exposition().decode()
    assert 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 1.0' in text
    # Between 3 and 4 seconds: the 4.0 bucket has it, the 2.0 bucket does not.
    assert (
        'kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="2.0"} 0.0'
        in text
    )
    assert (
        'kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="5.0"} 1.0'
        in text
    )
    assert "kubeproxy_sync_proxy_rules_endpoint_changes_total 2.0" in text
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2.0' in text
    assert loop.health.health()["status"]["IPv4"]["healthy"] is True


@pytest.mark.parametrize("mode", list(ProxyMode))
def test_each_mode_registers_upstreams_metrics(mode: ProxyMode) -> None:
    metrics = Metrics(mode)
    metrics.start(FAMILIES)
    text = metrics.exposition().decode()
    for name in (
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "kubeproxy_network_programming_duration_seconds",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kubeproxy_proxy_healthz_total",
        "kubeproxy_proxy_livez_total",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    ):
        assert f"# TYPE {name} " in text, name
    iptables_only = "kubeproxy_sync_full_proxy_rules_duration_seconds"
    nftables_only = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
    restore = "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"
    assert (iptables_only in text) == (mode is ProxyMode.IPTABLES)
    assert (nftables_only in text) == (mode is ProxyMode.NFTABLES)
    assert (restore in text) == (mode is not ProxyMode.NFTABLES)


def test_a_backend_may_skip_the_periodic_full_sync() -> None:
    loop = _loop(sync_period=0.2)
    _start(loop)

    class NoPeriodic(RecordingBackend):
        @property
        def periodic_full_sync(self) -> bool:
            return False

    loop.proxier.backend = backend = NoPeriodic()

    async def scenario() -> None:
        task = await _running(loop)
        await asyncio.sleep(0.5)
        _scale(loop, "10.244.1.2", "10.244.1.3")
        await eventually(lambda: len(backend.calls) == 2, 2)
        await _stop(task)

    run(scenario())
    first, change = backend.calls
    assert first.full and not change.full


def test_services_stranded_by_a_local_policy_are_counted() -> None:
    loop = _loop()
    _start(loop)
    near = service("near", "10.96.0.20")
    near["spec"]["internalTrafficPolicy"] = "Local"  # type: ignore[index]
    remote = endpoint_slice("near", ["10.244.2.2"], node="node-b")

    def gauge(policy: str) -> str:
        return (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
            f'{{ip_family="IPv4",traffic_policy="{policy}"}}'
        )

    async def scenario() -> None:
        task = await _running(loop)
        loop.cache.on_services([_delta(ADDED, near)], False)
        loop.cache.on_slices([_delta(ADDED, remote)], False)
        await eventually(lambda: f"{gauge('internal')} 1.0" in loop.metrics.exposition().decode())
        local = endpoint_slice("near", ["10.244.1.9"], node="node-a")
        loop.cache.on_slices([_delta(MODIFIED, local)], False)
        await eventually(lambda: f"{gauge('internal')} 0.0" in loop.metrics.exposition().decode())
        await _stop(task)

    run(scenario())
    assert f"{gauge('external')} 0.0" in loop.metrics.exposition().decode()
