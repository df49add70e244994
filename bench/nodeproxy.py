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
   log line: bytes and changed elements or rules);
4. **peak RSS** is the process's VmHWM at the end;
5. for comparison, the kernel tool loads the renderer's full output of the same
   cluster into another fresh namespace (**kernel load**).

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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench.cluster import NODE, make_cluster

T = TypeVar("T")
TOKEN = "bench-token"
HEALTHZ, METRICS = 10256, 10249
CHANGES = 5
CHANGE_TIMEOUT = 900.0


def _in_thread_in(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread that entered ``netns`` (sockets and threads it makes stay there)."""
    from pyroute2 import netns as pyroute2_netns

    out: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


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


def _kernel_load_s(mode: str, objects: list[dict[str, Any]], slices: list[dict[str, Any]]) -> float:
    """The kernel tool loading the renderer's full output into a fresh namespace."""
    from kubenet.model import IPFamily
    from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
    from kubenet.render import ProxyMode, render
    from kubenet.translate import node_info, translate

    node = node_info(objects[0], NODE)
    services = objects[1:]
    options = RenderOptions(
        node_name=NODE,
        ip_family=IPFamily.IPV4,
        node_ips=node.ips,
        local_detector=LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.128.0.0/10",)),
    )
    plan = render(translate(services, slices, node).service_map, options, ProxyMode(mode))
    text = plan.restore if mode == "iptables" else plan.text  # type: ignore[union-attr]
    tool = ["iptables-restore", "-w", "--noflush"] if mode == "iptables" else ["nft", "-f", "-"]
    with _netns("load") as ns:
        start = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, *tool], input=text.encode(), check=True)
        return time.perf_counter() - start


_SYNC_LINE = re.compile(
    r"(full|partial) sync of \w+ rules took ([\d.]+)s: .*?(\d+) bytes, (\d+) changed"
)


def run_mode(
    mode: str, services: int, endpoints: int, *, kernel_load: bool = True
) -> dict[str, Any]:
    from kubenet.testing.apiserver import ServerConfig, ThreadedApiServer

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
            _in_thread_in(ns, server.start)
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
            row["kernel_load_s"] = _kernel_load_s(mode, objects, slices)
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
    finally:
        http.close()
        # SIGKILL: a terminated node-proxy waits for a running kernel tool, and deleting
        # the namespace removes whatever it made.
        proc.kill()
        proc.wait()
    return out


_LAST = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'


def run(services: int, endpoints: int, modes: list[str]) -> list[dict[str, Any]]:
    return [run_mode(mode, services, endpoints) for mode in modes if mode != "ipvs"]


COLUMNS = [
    ("backend", "backend"),
    ("services", "services"),
    ("endpoints", "endpoints"),
    ("cold_sync_s", "cold sync s"),
    ("first_sync_s", "first sync s"),
    ("kernel_load_s", "kernel load s"),
    ("cold_target", "cold target"),
    ("cold_ok", "cold ok"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("rss_ok", "RSS ok"),
    ("change_ms_median", "change ms (median)"),
    ("change_ms_max", "change ms (max)"),
    ("change_sync_ms", "of which sync ms"),
    ("change_bytes", "change bytes"),
    ("change_items", "change items"),
    ("change_ok", "change ok"),
]
