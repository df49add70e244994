"""The process that builds the lab and holds it up until ``lab down``.

``node-proxy lab up`` starts it in a session of its own and returns once the state
file says ready. It builds, in order, recording each piece in the state file as soon
as it exists:

1. the namespaces (:func:`kubenet.testing.netns.build`): client, node, four pods;
2. a :mod:`kubenet.lab.podserver` in every pod namespace;
3. the embedded API server, listening on the node's address inside the node
   namespace, loaded with the example cluster;
4. ``node-proxy run`` in the node namespace, watching that API server; the lab is
   ready once it has synced (``/livez`` reports per-family status).

SIGTERM, SIGINT or SIGHUP take it all down in reverse order; deleting the node
namespace takes node-proxy's rules, sets and conntrack entries with it. Should this
process die without that, ``lab down`` finds the recorded pieces and removes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import FrameType

from kubenet.lab import layout
from kubenet.lab.inside import call_in, http_request
from kubenet.lab.state import LabState, lab_dir, remove, save
from kubenet.render import ProxyMode
from kubenet.testing.apiserver.server import ServerConfig, ThreadedApiServer
from kubenet.testing.netns import Topology, build
from kubenet.testing.podserver import READY

log = logging.getLogger("kubenet.lab")

#: How long node-proxy may take to sync for the first time.
SYNC_TIMEOUT = 30.0


class LabError(RuntimeError):
    """The lab could not be built (the message says which part failed)."""


def node_proxy_argv(mode: ProxyMode, kubeconfig: Path) -> list[str]:
    """``node-proxy run`` as the lab starts it inside the node namespace."""
    return [
        sys.executable,
        "-m",
        "kubenet.cli.node_proxy",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--proxy-mode",
        mode.value,
        "--hostname-override",
        layout.NODE_NAME,
        "--cluster-cidr",
        ",".join(layout.CLUSTER_CIDRS),
        "--healthz-bind-address",
        f"0.0.0.0:{layout.HEALTHZ_PORT}",
        "--metrics-bind-address",
        f"127.0.0.1:{layout.METRICS_PORT}",
        # Every sync in the log (lab.log), so a person can follow them.
        "-v",
        "2",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_pod_servers(stack: ExitStack, topo: Topology, logs: Path) -> dict[str, int]:
    pids = {}
    started = []
    for pod in layout.pods():
        argv = [sys.executable, "-m", "kubenet.lab.podserver", pod.name]
        argv += ["--address", pod.ipv4, "--address", pod.ipv6]
        argv += [arg for port in layout.POD_PORTS for arg in ("--port", str(port))]
        with (logs / f"{pod.name}.log").open("ab") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", topo.pods[pod.name].name, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        stack.callback(_stop_pod_server, proc)
        started.append((pod.name, proc))
        pids[pod.name] = proc.pid
    for name, proc in started:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        if not ready or proc.stdout.readline().decode().strip() != READY:
            raise LabError(f"the server of {name} did not start (see {logs / f'{name}.log'})")
    return pids


def _stop_pod_server(proc: subprocess.Popen[bytes]) -> None:
    # It exits when its standard input closes.
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _synced(node_netns: str) -> bool:
    def livez() -> bool:
        try:
            answer = http_request("127.0.0.1", layout.HEALTHZ_PORT, "/livez", timeout=1.0)
            return "status" in json.loads(answer.body)
        except (OSError, ValueError):
            return False

    return call_in(node_netns, livez)


def run(mode: ProxyMode, sources: Sequence[Path], folder: Path, stop: threading.Event) -> None:
    """Build the lab, mark it ready, hold it until ``stop`` is set, take it down."""
    state = LabState(mode=mode.value, supervisor_pid=os.getpid())
    save(state, folder)
    with ExitStack() as stack:
        stack.callback(remove, folder)
        topo = stack.enter_context(build(layout.topology()))
        namespaces = {"node": topo.node.name, "client": topo.client.name}
        namespaces |= {name: ns.name for name, ns in topo.pods.items()}
        state = state.with_namespaces(namespaces)
        save(state, folder)
        log.info("namespaces: %s", ", ".join(namespaces.values()))

        for name, pid in _start_pod_servers(stack, topo, folder).items():
            state = state.with_pid(name, pid)
        save(state, folder)

        api = ThreadedApiServer(
            ServerConfig(
                host=layout.api_host(),
                port=layout.API_PORT,
                manifests=tuple(sources),
                state_dir=folder / "apiserver",
                kubeconfig_path=folder / "kubeconfig",
                bookmark_interval=10.0,
            )
        )
        # Its event-loop thread, made from a thread inside the node namespace, lives
        # there too; so does its listening socket.
        call_in(topo.node.name, api.start)
        stack.callback(api.stop)
        state = replace(
            state,
            api_url=api.url,
            ca_path=str(api.ca_path),
            token=api.admin_token,
            kubeconfig=str(api.kubeconfig),
        )
        save(state, folder)
        log.info("API server: %s", api.url)

        with (folder / "node-proxy.log").open("ab") as out:
            proxy = subprocess.Popen(
                ["ip", "netns", "exec", topo.node.name, *node_proxy_argv(mode, api.kubeconfig)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        stack.callback(_stop, proxy)
        state = state.with_pid("node-proxy", proxy.pid)
        save(state, folder)

        deadline = time.monotonic() + SYNC_TIMEOUT
        while not _synced(topo.node.name):
            if proxy.poll() is not None:
                raise LabError(
                    f"node-proxy exited with status {proxy.returncode} "
                    f"(see {folder / 'node-proxy.log'})"
                )
            if time.monotonic() > deadline or stop.is_set():
                raise LabError(f"node-proxy did not sync within {SYNC_TIMEOUT:.0f}s")
            time.sleep(0.2)
        save(replace(state, ready=True), folder)
        log.info("ready")

        reported = False
        while not stop.wait(1.0):
            if proxy.poll() is not None and not reported:
                log.error("node-proxy exited with status %s", proxy.returncode)
                reported = True
        log.info("taking the lab down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenet.lab.supervisor")
    parser.add_argument("--mode", type=ProxyMode, default=ProxyMode.IPTABLES)
    parser.add_argument("--from", dest="sources", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        run(args.mode, args.sources, lab_dir(), stop)
    except Exception as exc:
        log.error("the lab could not be built: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
