"""api-proxy against kubectl proxy, side by side in one run, on the same upstreams.

``python -m bench.apiproxy [--duration S] [--rounds N] [--concurrency 1,16,64]``

What is measured, for each proxy in turn (alternating, so drift hits both alike):

- small GETs (a ~1 KB PodList) through the proxy to a TLS nginx on loopback, with
  ``wrk`` at each concurrency: requests per second, p50 and p99 latency, and the proxy's
  CPU time per request (user + system);
- time to first event of a watch, through the proxy to the embedded API server
  (``kubenet.testing.apiserver``): from sending the request to the first event line
  (median of 20 watches opened 50 ms apart);
- RSS while streaming a 1 GiB response (a sparse file served by nginx) through the
  proxy with ``curl``: before, peak during (sampled every 20 ms), and throughput.

nginx is the upstream for throughput because the embedded API server, written in
Python, would be the bottleneck and hide both proxies. Needs ``nginx``, ``wrk`` and
``curl`` (Debian packages of those names) and loopback only; ``kubectl`` on PATH for the
comparison (without it only api-proxy is measured, with a note). Not a test: numbers
depend on the machine, which is why both proxies run in the same run.

Target (from the api-proxy issue): requests per second >= kubectl proxy's, p99 <=
kubectl proxy's, flat memory while streaming.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.report import print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
PODS_PATH = "/api/v1/namespaces/default/pods"
BIG_PATH = "/big"
BIG_SIZE = 1 << 30

COLUMNS = [
    ("metric", "metric"),
    ("kubectl", "kubectl proxy"),
    ("apiproxy", "api-proxy"),
    ("ratio", "api-proxy / kubectl"),
    ("target_met", "target met"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the upstreams -------------------------------------------------------------------------


def _pod_list() -> dict[str, Any]:
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": [
            {
                "metadata": {"name": f"web-{i}", "namespace": "default", "uid": f"uid-{i}",
                             "labels": {"app": "web"}},
                "spec": {"nodeName": "node-a", "containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
                "status": {"phase": "Running", "podIP": f"10.244.0.{i + 2}"},
            }
            for i in range(3)
        ],
    }  # fmt: skip


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {dir}/server.crt;
    ssl_certificate_key {dir}/server.key;
    location = {pods} {{ default_type application/json; alias {dir}/pods.json; }}
    location = {big} {{ default_type application/octet-stream; alias {dir}/big.bin; }}
  }}
}}
"""


@dataclass
class Nginx:
    url: str
    kubeconfig: Path
    process: subprocess.Popen[bytes]


def _kubeconfig(path: Path, server: str, ca_pem: bytes) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": "bench", "user": {"token": "bench-token"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "current-context": "bench",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def nginx(folder: Path) -> Iterator[Nginx]:
    from kubenet.testing.apiserver.certs import CertificateAuthority

    # nginx workers run as an unprivileged user: they must be able to read the files.
    folder.chmod(0o755)
    ca = CertificateAuthority("bench-ca")
    ca.serving(["127.0.0.1"]).write(folder, "server")
    (folder / "pods.json").write_text(json.dumps(_pod_list()))
    with (folder / "big.bin").open("wb") as big:
        big.truncate(BIG_SIZE)  # sparse: no disk used, reads as zeros
    (folder / "tmp").mkdir()
    port = _free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port, pods=PODS_PATH, big=BIG_PATH))
    process = subprocess.Popen(
        ["nginx", "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        _wait_for_port(port)
        yield Nginx(url, _kubeconfig(folder / "kubeconfig", url, ca.cert_pem), process)
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- the proxies ------------------------------------------------------------------------------


@dataclass
class Proxy:
    name: str
    process: subprocess.Popen[str]
    address: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


@contextlib.contextmanager
def start_proxy(name: str, kubeconfig: Path) -> Iterator[Proxy]:
    if name == "kubectl":
        command = [str(shutil.which("kubectl")), "proxy", "--port=0", f"--kubeconfig={kubeconfig}"]
    else:
        command = [sys.executable, "-m", "kubenet.cli.api_proxy", "serve", "--port", "0",
                   "--kubeconfig", str(kubeconfig)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.match(r"Starting to serve on (\S+)", line)
        if match is None:
            raise RuntimeError(f"{name} did not start: {line!r}")
        yield Proxy(name, process, match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- measurements ---------------------------------------------------------------------------

_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def load(proxy: Proxy, concurrency: int, duration: float) -> dict[str, float]:
    """wrk against the proxy: requests/s, p50/p99 in ms, proxy CPU microseconds/request."""
    before = proxy.cpu_seconds()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:.0f}s", "--latency",
         f"{proxy.url}{PODS_PATH}"],
        capture_output=True, text=True, timeout=duration + 30, check=True,
    ).stdout  # fmt: skip
    cpu = proxy.cpu_seconds() - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{proxy.name}: {errors.group(1)} failed requests at c={concurrency}")
    latency = {p: float(v) * _UNIT[u] for p, v, u in _WRK_LATENCY.findall(out)}
    requests = rps * duration
    return {
        "rps": rps,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "cpu_us_per_request": cpu / requests * 1e6 if requests else 0.0,
    }


def first_event_ms(proxy: Proxy, repeats: int = 20) -> float:
    """Median time from sending a watch request to receiving its first event."""
    host, port = proxy.address.rsplit(":", 1)
    request = (
        b"GET /api/v1/namespaces?watch=1&timeoutSeconds=5 HTTP/1.1\r\n"
        b"Host: localhost\r\nConnection: close\r\n\r\n"
    )
    times = []
    for _ in range(repeats):
        # Watches are opened now and then, not back to back by one client: give each
        # proxy a moment between them (it is the same moment for both).
        time.sleep(0.05)
        with socket.create_connection((host, int(port)), 5) as sock:
            start = time.perf_counter()
            sock.sendall(request)
            received = b""
            while b'{"type"' not in received or not received.endswith(b"\n"):
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError(f"{proxy.name}: watch ended before an event")
                received += data
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def stream(proxy: Proxy) -> dict[str, float]:
    """RSS before and (peak) while curl pulls 1 GiB through the proxy, and MB/s."""
    baseline = proxy.rss_mib()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proxy.rss_mib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null",
             "-w", "%{size_download} %{speed_download} %{http_code}", f"{proxy.url}{BIG_PATH}"],
            capture_output=True, text=True, timeout=600, check=True,
        ).stdout.split()  # fmt: skip
    finally:
        done.set()
        sampler.join()
    size, speed, status = int(out[0]), float(out[1]), out[2]
    if size != BIG_SIZE:
        raise RuntimeError(f"{proxy.name}: HTTP {status}, {size} bytes, expected {BIG_SIZE}")
    return {"rss_before_mib": baseline, "rss_peak_mib": peak, "stream_mb_s": speed / 1e6}


# --- the run ---------------------------------------------------------------------------------


def _row(
    metric: str, results: dict[str, float | None], higher_is_better: bool | None
) -> dict[str, Any]:
    theirs, ours = results.get("kubectl"), results.get("apiproxy")
    row: dict[str, Any] = {"metric": metric, "kubectl": theirs, "apiproxy": ours}
    if theirs and ours is not None:
        row["ratio"] = ours / theirs
        if higher_is_better is not None:
            row["target_met"] = ours >= theirs if higher_is_better else ours <= theirs
    return row


def run(
    duration: float = 5.0,
    rounds: int = 1,
    concurrencies: tuple[int, ...] = (1, 16, 64),
    skip_stream: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run everything; returns the table rows and the raw numbers."""
    missing = [tool for tool in ("nginx", "wrk", "curl") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench.apiproxy needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    names = ["kubectl", "apiproxy"] if shutil.which("kubectl") else ["apiproxy"]
    notes = [] if "kubectl" in names else ["kubectl not on PATH: kubectl proxy not measured"]
    raw: dict[str, Any] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-apiproxy-") as folder, nginx(Path(folder)) as up:
        for name in names:
            with start_proxy(name, up.kubeconfig) as proxy:
                load(proxy, 16, 1)  # warm up: connections, caches
                raw[name]["rss_idle_mib"] = proxy.rss_mib()
        for _ in range(rounds):
            for concurrency in concurrencies:
                for name in names:
                    with start_proxy(name, up.kubeconfig) as proxy:
                        load(proxy, concurrency, 1)
                        result = load(proxy, concurrency, duration)
                        raw[name].setdefault(f"c{concurrency}", []).append(result)
        if not skip_stream:
            for name in names:
                with start_proxy(name, up.kubeconfig) as proxy:
                    raw[name]["stream"] = stream(proxy)
    from kubenet.testing.apiserver.server import running_apiserver

    with running_apiserver() as apiserver:
        for name in names:
            with start_proxy(name, apiserver.kubeconfig) as proxy:
                first_event_ms(proxy, 3)
                raw[name]["first_event_ms"] = first_event_ms(proxy)

    def median(name: str, key: str, field: str) -> float | None:
        runs = raw.get(name, {}).get(key)
        return statistics.median(r[field] for r in runs) if runs else None

    rows = []
    for c in concurrencies:
        key = f"c{c}"
        rows.append(_row(f"requests/s, c={c}", {n: median(n, key, "rps") for n in names}, True))
        rows.append(_row(f"p50 ms, c={c}", {n: median(n, key, "p50_ms") for n in names}, False))
        rows.append(_row(f"p99 ms, c={c}", {n: median(n, key, "p99_ms") for n in names}, False))
        rows.append(
            _row(
                f"CPU µs/request, c={c}",
                {n: median(n, key, "cpu_us_per_request") for n in names},
                None,
            )
        )
    rows.append(_row("first watch event ms", {n: raw[n]["first_event_ms"] for n in names}, False))
    rows.append(_row("RSS idle MiB", {n: raw[n]["rss_idle_mib"] for n in names}, None))
    if not skip_stream:
        for field, label in (("rss_peak_mib", "RSS peak streaming 1 GiB MiB"),
                             ("stream_mb_s", "1 GiB stream MB/s")):  # fmt: skip
            rows.append(_row(label, {n: raw[n]["stream"][field] for n in names}, None))
        grow = {
            n: raw[n]["stream"]["rss_peak_mib"] - raw[n]["stream"]["rss_before_mib"] for n in names
        }
        row = _row("RSS growth while streaming MiB", grow, None)
        row["target_met"] = grow["apiproxy"] < 32  # flat: no part of the body held
        rows.append(row)
    return rows, {"raw": raw, "notes": notes, "duration_s": duration, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apiproxy", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--skip-stream", action="store_true", help="skip the 1 GiB stream")
    args = parser.parse_args(argv)
    concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c)
    rows, payload = run(args.duration, args.rounds, concurrencies, args.skip_stream)
    print_table("api-proxy vs kubectl proxy (same upstream, same run)", rows, COLUMNS)
    for note in payload["notes"]:
        print(f"note: {note}")
    path = write_json("apiproxy", {"rows": rows, **payload})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
