"""``node-proxy run`` against a large cluster: cold sync, peak RSS, one endpoint change.

For each backend, in a fresh network namespace (``kn-bench-...``):

1. an embedded API server listens inside the namespace (plain HTTP, a token), loaded
   with the synthetic cluster of :mod:`bench.cluster` (node ports renumbered so the
   API server accepts every Service);
2. ``node-proxy run`` starts as a real process in the namespace (``ip netns exec``);
   **cold sync** is the time from starting it to the first full sync being applied
   (its ``/livez`` reports per-family status from then on; polled every 10 ms);
3. one Service's EndpointSlice gets one endpoint replaced through the API, a few
   times; **change latency** is the API write to the sync being applied (the daemon's
   ``kubeproxy_sync_proxy_rules_last_timestamp_seconds`` minus the write's wall
   time), and the **applied size** is what that sync fed the kernel tool (from its
   log line: bytes and changed elements or rules); for iptables also the **kernel
   floor**: ``iptables-restore`` of one new chain with one rule on the same table,
   the least any change can cost there;
4. **peak RSS** is the process's VmHWM at the end;
5. for comparison, the kernel tool loads the renderer's output of the same cluster
   into another fresh namespace (**kernel load**): nftables one ``nft -f``; iptables
   the very restores node-proxy's full sync makes, one after another (and, with
   ``--single-restore``, the whole ruleset in one restore as upstream loads it).

Targets (bench/README in docs/node-proxy.md): nftables cold sync <= 5 s; iptables
cold sync <= 1.25x the kernel's own restore; one change <= 20 ms with a size that
does not grow with the cluster; RSS <= 300 MiB.
"""

from __future__ import annotations

import copy
import http.client
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.cluster import NODE, make_cluster

TOKEN = "bench-token"
HEALTHZ, METRICS = 10256, 10249
CHANGES = 5
CHANGE_TIMEOUT = 900.0


@contextmanager
def _netns(role: str) -> Iterator[str]:
    name = f"kn-bench-{role}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _cluster(services: int, endpoints: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The synthetic cluster, with node ports the API server accepts (all distinct)."""
    cluster = make_cluster(services, endpoints)
    objects = [cluster.node]
    for i, svc in enumerate(cluster.services):
        for port in svc["spec"]["ports"]:
            if "nodePort" in port:
                port["nodePort"] = 30000 + i
        if "healthCheckNodePort" in svc["spec"]:
            svc["spec"]["healthCheckNodePort"] = 20000 + i
    return objects + cluster.services, cluster.slices


class _Http:
    """Plain HTTP GETs to node-proxy's ports, from sockets made in the node namespace.

    Sockets are made by one worker thread that stays in the namespace, so a poll
    costs a connection, not a thread.
    """

    def __init__(self, netns: str) -> None:
        from pyroute2 import netns as pyroute2_netns

        self._worker = ThreadPoolExecutor(
            1, initializer=lambda: pyroute2_netns.setns(netns, flags=0)
        )

    def close(self) -> None:
        self._worker.shutdown()

    def get(self, port: int, path: str) -> str:
        sock = self._worker.submit(socket.socket, socket.AF_INET, socket.SOCK_STREAM).result()
        sock.settimeout(5)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        with sock:
            sock.connect(("127.0.0.1", port))
            conn.sock = sock
            conn.request("GET", path)
            return conn.getresponse().read().decode()


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _kernel_load(
    mode: str, objects: list[dict[str, Any]], slices: list[dict[str, Any]], single: bool
) -> dict[str, float]:
    """The kernel tool loading the renderer's output of the cluster into a fresh namespace.

    nftables: the whole ruleset in one ``nft -f``. iptables: the restores node-proxy's
    full sync makes (:func:`kubenet.render.iptables.render_batched`), one
    ``iptables-restore`` process after another; with ``single`` also the whole ruleset
    in one restore, as upstream loads it (iptables-nft 1.8.9: minutes at 10,000
    Services, quadratic in the size of one restore).
    """
    from kubenet.model import IPFamily
    from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
    from kubenet.render import ProxyMode, render
    from kubenet.render.iptables import render_batched
    from kubenet.translate import node_info, translate

    node = node_info(objects[0], NODE)
    services = objects[1:]
    options = RenderOptions(
        node_name=NODE,
        ip_family=IPFamily.IPV4,
        node_ips=node.ips,
        local_detector=LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.128.0.0/10",)),
    )
    service_map = translate(services, slices, node).service_map
    if mode == "iptables":
        _, restores = render_batched(service_map, options)
        texts = ["\n".join(parts) for parts in restores]
        tool = ["iptables-restore", "-w", "--noflush"]
    else:
        texts = [render(service_map, options, ProxyMode.NFTABLES).text]  # type: ignore[union-attr]
        tool = ["nft", "-f", "-"]
    out = {"kernel_load_s": _load_in_fresh_netns(tool, texts)}
    if single and mode == "iptables":
        whole = render(service_map, options, ProxyMode.IPTABLES).restore  # type: ignore[union-attr]
        out["kernel_load_single_s"] = _load_in_fresh_netns(tool, [whole])
    return out


def _load_in_fresh_netns(tool: list[str], texts: list[str]) -> float:
    with _netns("load") as ns:
        start = time.perf_counter()
        for text in texts:
            subprocess.run(["ip", "netns", "exec", ns, *tool], input=text.encode(), check=True)
        return time.perf_counter() - start


_SYNC_LINE = re.compile(
    r"(full|partial) sync of \w+ rules took ([\d.]+)s: .*?(\d+) bytes, (\d+) changed"
)


def run_mode(
    mode: str,
    services: int,
    endpoints: int,
    *,
    kernel_load: bool = True,
    single_restore: bool = False,
) -> dict[str, Any]:
    from kubenet.testing.apiserver import ServerConfig, ThreadedApiServer
    from kubenet.testing.netns import call_in_netns

    objects, slices = _cluster(services, endpoints)
    row: dict[str, Any] = {"backend": mode, "services": services, "endpoints": services * endpoints}
    state = Path(tempfile.mkdtemp(prefix="kubenet-bench-"))
    try:
        tokens = state / "tokens.csv"
        tokens.write_text(f'{TOKEN},bench,uid,"system:masters"\n')
        with _netns("node") as ns:
            server = ThreadedApiServer(
                ServerConfig(
                    tls=False,
                    token_file=tokens,
                    bootstrap=False,
                    node_port_range=(20000, 40000),
                )
            )
            call_in_netns(ns, server.start)
            try:
                for i in range(0, len(objects), 2000):
                    server.load(objects[i : i + 2000])
                for i in range(0, len(slices), 2000):
                    server.load(slices[i : i + 2000])
                kubeconfig = state / "kubeconfig"
                kubeconfig.write_text(
                    "apiVersion: v1\nkind: Config\ncurrent-context: b\n"
                    f"clusters: [{{name: b, cluster: {{server: '{server.url}'}}}}]\n"
                    f"users: [{{name: b, user: {{token: {TOKEN}}}}}]\n"
                    "contexts: [{name: b, context: {cluster: b, user: b}}]\n"
                )
                row.update(_measure(mode, ns, server, kubeconfig, slices, state))
            finally:
                server.stop()
        if kernel_load:
            row.update(_kernel_load(mode, objects, slices, single_restore))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    load = row.get("kernel_load_s")
    cold = row.get("cold_sync_s")
    if mode == "nftables":
        row["cold_target"] = "<= 5 s"
        row["cold_ok"] = cold is not None and cold <= 5.0
    elif load:
        row["cold_target"] = f"<= {1.25 * load:.1f} s"
        row["cold_ok"] = cold is not None and cold <= 1.25 * load
    row["change_ok"] = row.get("change_ms_median", 1e9) <= 20
    row["rss_ok"] = row.get("peak_rss_mib", 1e9) <= 300
    return row


def _measure(
    mode: str,
    ns: str,
    server: Any,
    kubeconfig: Path,
    slices: list[dict[str, Any]],
    state: Path,
) -> dict[str, Any]:
    http = _Http(ns)
    log_path = state / "node-proxy.log"
    argv = [
        sys.executable, "-m", "kubenet.cli.node_proxy", "run",
        "--kubeconfig", str(kubeconfig), "--proxy-mode", mode,
        "--hostname-override", NODE, "--cluster-cidr", "10.128.0.0/10", "-v", "2",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=log)
    out: dict[str, Any] = {}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"node-proxy exited:\n{log_path.read_text()[-3000:]}")
            try:
                if '"status"' in http.get(HEALTHZ, "/livez"):
                    break
            except OSError:
                pass
            time.sleep(0.01)
        out["cold_sync_s"] = time.perf_counter() - start
        # One endpoint replaced, a few times, each after the min sync period.
        target = copy.deepcopy(slices[10])
        latencies, syncs, sizes, changed = [], [], [], []
        for n in range(CHANGES):
            time.sleep(1.2)
            target["endpoints"][0]["addresses"] = [f"10.250.{n // 250}.{n % 250 + 1}"]
            before = _metric(http.get(METRICS, "/metrics"), _LAST)
            wrote = time.time()
            server.load([copy.deepcopy(target)])
            while True:
                synced = _metric(http.get(METRICS, "/metrics"), _LAST)
                if synced is not None and synced != before and synced >= wrote:
                    break
                if time.time() - wrote > CHANGE_TIMEOUT:
                    raise RuntimeError(f"no sync within {CHANGE_TIMEOUT}s of a change")
                time.sleep(0.005)
            latencies.append((synced - wrote) * 1000)
            time.sleep(0.05)  # the log line follows the sync's bookkeeping
            last = _SYNC_LINE.findall(log_path.read_text())[-1]
            syncs.append(float(last[1]) * 1000)
            sizes.append(int(last[2]))
            changed.append(int(last[3]))
        first = _SYNC_LINE.findall(log_path.read_text())[0]
        out["first_sync_s"] = float(first[1])
        out["change_ms_median"] = statistics.median(latencies)
        out["change_sync_ms"] = statistics.median(syncs)
        out["change_ms_max"] = max(latencies)
        out["change_bytes"] = statistics.median(sizes)
        out["change_items"] = statistics.median(changed)
        out["peak_rss_mib"] = _peak_rss_mib(proc.pid)
        if mode == "iptables":
            out["kernel_floor_ms"] = _iptables_floor_ms(ns)
    finally:
        http.close()
        # SIGKILL: a terminated node-proxy waits for a running kernel tool, and deleting
        # the namespace removes whatever it made.
        proc.kill()
        proc.wait()
    return out


_LAST = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'

_FLOOR_CHAIN = "KUBE-BENCH-FLOOR"


def _iptables_floor_ms(ns: str) -> float:
    """The kernel tool's own cost for the smallest change, on the table node-proxy made.

    One new chain with one rule, as ``iptables-restore --noflush``: with iptables-nft
    every transaction that adds a rule has the kernel validate the whole ruleset
    reachable from the base chains, so this grows with the cluster whatever is sent.
    """
    add = f"*nat\n:{_FLOOR_CHAIN} - [0:0]\n-A {_FLOOR_CHAIN} -j RETURN\nCOMMIT\n"
    remove = f"*nat\n:{_FLOOR_CHAIN} - [0:0]\n-X {_FLOOR_CHAIN}\nCOMMIT\n"
    times = []
    for _ in range(3):
        for text in (add, remove):
            start = time.perf_counter()
            subprocess.run(
                ["ip", "netns", "exec", ns, "iptables-restore", "-w", "--noflush"],
                input=text.encode(),
                check=True,
            )
            if text is add:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(
    services: int, endpoints: int, modes: list[str], single_restore: bool = False
) -> list[dict[str, Any]]:
    return [
        run_mode(mode, services, endpoints, single_restore=single_restore)
        for mode in modes
        if mode != "ipvs"
    ]


COLUMNS = [
    ("backend", "backend"),
    ("services", "services"),
    ("endpoints", "endpoints"),
    ("cold_sync_s", "cold sync s"),
    ("first_sync_s", "first sync s"),
    ("kernel_load_s", "kernel load s"),
    ("kernel_load_single_s", "one restore s"),
    ("cold_target", "cold target"),
    ("cold_ok", "cold ok"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("rss_ok", "RSS ok"),
    ("change_ms_median", "change ms (median)"),
    ("change_ms_max", "change ms (max)"),
    ("change_sync_ms", "of which sync ms"),
    ("kernel_floor_ms", "kernel floor ms"),
    ("change_bytes", "change bytes"),
    ("change_items", "change items"),
    ("change_ok", "change ok"),
]
