"""``node-proxy run``: every part of the daemon on one asyncio event loop.

Three reflectors (Services, EndpointSlices, this node's Node) feed the cluster cache;
the proxier syncs the kernel; two small HTTP servers answer ``/healthz`` and
``/metrics`` (with ``/rules``); the health-check node ports open and close as
Services ask. SIGTERM and SIGINT stop everything and leave the rules in the kernel,
as kube-proxy does: a restarted node-proxy takes over from them without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubenet import kubeconfig, watch
from kubenet.model import IPFamily
from kubenet.node.backends import Backend, cleanup, make_backend, missing_support
from kubenet.node.changes import ClusterCache
from kubenet.node.config import ProxyConfig, split_host_port, split_list
from kubenet.node.health import ProxyHealth, ServiceHealthServers, health_app
from kubenet.node.metrics import Metrics, metrics_app
from kubenet.node.proxier import Proxier
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render import ProxyMode
from kubenet.translate import NodeInfo

log = logging.getLogger("kubenet.node")


class StartupError(RuntimeError):
    """The daemon cannot start (the message says why, in one line)."""


# ------------------------------------------------------------------------- options


def node_name(config: ProxyConfig) -> str:
    """--hostname-override, or the host name, lower-cased (as kube-proxy does)."""
    return (config.hostname_override or socket.gethostname()).strip().lower()


def ip_families(mode: ProxyMode) -> tuple[IPFamily, ...]:
    """The families to program: IPv4, and IPv6 when the kernel (and the tools) have it."""
    families = [IPFamily.IPV4]
    has_v6 = os.path.exists("/proc/net/if_inet6")
    if mode is ProxyMode.IPTABLES and shutil.which("ip6tables-restore") is None:
        has_v6 = False
    if has_v6:
        families.append(IPFamily.IPV6)
    return tuple(families)


def render_options(
    config: ProxyConfig, node: NodeInfo, families: tuple[IPFamily, ...]
) -> dict[IPFamily, RenderOptions]:
    """The renderers' options for this node, one per family."""
    mode = config.detect_local_mode
    if mode is DetectLocalMode.CLUSTER_CIDR:
        detector = LocalDetector(mode, split_list(config.cluster_cidr))
    elif mode is DetectLocalMode.NODE_CIDR:
        detector = LocalDetector(mode, node.pod_cidrs)
    elif mode is DetectLocalMode.BRIDGE_INTERFACE:
        detector = LocalDetector(mode, interface=config.pod_bridge_interface)
    else:
        detector = LocalDetector(mode, interface=config.pod_interface_name_prefix)
    return {
        family: RenderOptions(
            node_name=node.name,
            ip_family=family,
            node_ips=node.ips,
            local_detector=detector,
            masquerade_all=config.masquerade_all,
            masquerade_bit=config.masquerade_bit,
            nodeport_addresses=config.nodeport_addresses,
        )
        for family in families
    }


# ------------------------------------------------------------------------- logging


class KlogFormatter(logging.Formatter):
    """klog's header: ``I1126 10:57:15.123456   12345 proxier.py:42] message``."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created)
        head = f"{record.levelname[0]}{when:%m%d %H:%M:%S.%f} {record.process:>7} "
        head += f"{record.filename}:{record.lineno}] "
        text = head + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KlogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 5 else logging.INFO)
    # aiohttp's access log says nothing an operator of a proxy needs.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- daemon


@dataclass
class Daemon:
    """The running parts, for tests that drive a daemon in-process."""

    config: ProxyConfig
    cache: ClusterCache
    backend: Backend
    proxier: Proxier
    metrics: Metrics
    health: ProxyHealth
    health_servers: ServiceHealthServers
    reflectors: list[watch.Reflector] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def build(config: ProxyConfig, access: kubeconfig.ClusterAccess) -> tuple[Daemon, watch.Client]:
    """Every part, wired; nothing started."""
    name = node_name(config)
    families = ip_families(config.mode)
    cache = ClusterCache(name)

    def options_for(node: NodeInfo) -> Mapping[IPFamily, RenderOptions]:
        return render_options(config, node, families)

    backend = make_backend(
        config.mode, options_for(NodeInfo(name)), ipvs_scheduler=config.ipvs_scheduler
    )
    metrics = Metrics(config.mode)
    metrics.start(families)
    health = ProxyHealth(2 * config.sync_period, families, node=lambda: cache.node_object)
    # Health-check node ports listen on every address. (With CIDRs in
    # --nodeport-addresses upstream listens on the node's addresses inside them.)
    health_servers = ServiceHealthServers(health)
    proxier = Proxier(
        cache,
        backend,
        options_for,
        sync_period=config.sync_period,
        min_sync_period=config.min_sync_period,
        health=health,
        metrics=metrics,
        health_servers=health_servers,
        dry_run=config.dry_run,
        verbosity=config.verbosity,
    )
    cache.on_change = proxier.request
    client = watch.Client(access)
    daemon = Daemon(config, cache, backend, proxier, metrics, health, health_servers)
    daemon.reflectors = [
        watch.Reflector(client, watch.services(), cache.on_services),
        watch.Reflector(client, watch.endpoint_slices(), cache.on_slices),
        watch.Reflector(client, watch.node(name), cache.on_node),
    ]
    return daemon, client


async def _serve(app: web.Application, address: str, what: str) -> web.AppRunner | None:
    """Start one HTTP server; a port that cannot be bound is logged, not fatal (upstream)."""
    host, port = split_host_port(address, what)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host or None, port, reuse_address=True).start()
    except OSError as exc:
        log.error("failed to start %s server on %s: %s", what, address, exc)
        await runner.cleanup()
        return None
    log.info("serving %s on %s", what, address)
    return runner


async def run(config: ProxyConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM / SIGINT (or ``stop``); the exit status."""
    import prometheus_client

    # Upstream's Go client exports no *_created series. (The function is untyped.)
    exposition: Any = prometheus_client
    exposition.disable_created_metrics()
    for name in config.ignored:
        log.info("setting %s is accepted but has no effect in node-proxy", name)
    # In a worker thread: pyroute2's synchronous netlink sockets (the IPVS probe) run
    # an event loop of their own, which cannot start inside this running one.
    missing = await asyncio.to_thread(missing_support, config.mode)
    if missing:
        raise StartupError(f"--proxy-mode {config.mode.value}: {missing}")
    _raise_open_files_limit()
    try:
        access = kubeconfig.load(config.kubeconfig or None, config.master or None)
    except kubeconfig.KubeconfigError as exc:
        raise StartupError(str(exc)) from None
    daemon, client = build(config, access)
    daemon.backend.prepare()
    log.info(
        "node-proxy %s mode on node %s (families %s), API server %s%s",
        config.mode.value,
        daemon.cache.node_name,
        ", ".join(f.value for f in daemon.backend.families),
        access.server,
        " (dry run: nothing is applied)" if config.dry_run else "",
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    counters = {"healthz": daemon.metrics.healthz, "livez": daemon.metrics.livez}

    def count(page: str, code: int) -> None:
        counters[page].labels(str(code)).inc()

    if config.healthz_bind_address:
        runner = await _serve(
            health_app(daemon.health, count), config.healthz_bind_address, "healthz"
        )
        if runner:
            daemon.runners.append(runner)
    if config.metrics_bind_address:
        runner = await _serve(
            metrics_app(daemon.metrics, daemon.backend.read_back),
            config.metrics_bind_address,
            "metrics",
        )
        if runner:
            daemon.runners.append(runner)
    tasks = [asyncio.create_task(r.run(), name=f"watch {r.resource}") for r in daemon.reflectors]
    tasks.append(asyncio.create_task(daemon.proxier.run(), name="proxier"))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task is stopper else task.exception()
            if failure is not None:
                raise failure
    finally:
        log.info("stopping; the rules stay in the kernel")
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await daemon.health_servers.close()
        for runner in daemon.runners:
            await runner.cleanup()
        await client.close()
    return 0


def _raise_open_files_limit() -> None:
    """Allow as many descriptors as the hard limit does (Go programs do this at start).

    Every health-check node port is a listening socket; a large cluster has many.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_cleanup() -> int:
    """``--cleanup``: remove what every mode made; 0 when all went."""
    problems = cleanup()
    for problem in problems:
        log.error("cleanup: %s", problem)
    return 1 if problems else 0
