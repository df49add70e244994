"""``node-proxy lab``: build the lab, poke at it, take it down.

    node-proxy lab up [--proxy-mode nftables]
    node-proxy lab curl web --count 10
    node-proxy lab scale web 1
    node-proxy lab trace web
    node-proxy lab rules
    node-proxy lab down

Everything but ``trace`` needs root (network namespaces). Without the node-proxy
wrapper the same app runs as ``python -m kubenet.lab``.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from kubenet.lab import layout
from kubenet.lab.client import LabApi, LabApiError
from kubenet.lab.inside import call_in, http_request
from kubenet.lab.scale import ScaleError, plan_scale
from kubenet.lab.state import LabState, lab_dir, load
from kubenet.lab.teardown import down, is_running, program_of, supervisor_running
from kubenet.render import ProxyMode
from kubenet.testing.podserver import Reply, parse_reply

PROG = "node-proxy lab"
#: How long ``lab up`` waits for the lab to be ready.
UP_TIMEOUT = 90.0

app = typer.Typer(
    name="lab",
    help="A lab on this machine: client, node and pods in network namespaces, the example "
    "cluster in an embedded API server, and node-proxy run on the node (needs root).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


def _fail(message: str) -> NoReturn:
    """One error line and exit status 2, as node-proxy's other commands fail."""
    typer.echo(f"{PROG}: error: {message}", err=True)
    raise typer.Exit(2)


def _need_root() -> None:
    if os.geteuid() != 0:
        _fail("the lab needs root: it creates network namespaces (try sudo)")


def _running_lab() -> LabState:
    state = load()
    if state is None:
        _fail("no lab is up (start one with: node-proxy lab up)")
    if not supervisor_running(state):
        _fail("the lab's supervisor is gone; clean up with: node-proxy lab down")
    if not state.ready:
        _fail("the lab is still starting (or failed to start; see node-proxy lab status)")
    return state


def _split_name(service: str) -> tuple[str, str]:
    namespace, _, name = service.rpartition("/")
    return namespace or layout.DEFAULT_NAMESPACE, name


def _source(state: LabState, where: str) -> tuple[str, str]:
    """(namespace, IPv4 address) of a role: client, node or a pod name."""
    if where == "client":
        return state.netns("client"), layout.client_ip()
    if where == "node":
        return state.netns("node"), layout.api_host()
    for pod in layout.pods():
        if pod.name == where:
            return state.netns(pod.name), pod.ipv4
    roles = ", ".join(["client", "node", *(p.name for p in layout.pods())])
    _fail(f"--from: {where!r} is not part of the lab ({roles})")


def _service_port(service: dict[str, Any], port: str | None) -> dict[str, Any]:
    ports: list[dict[str, Any]] = service.get("spec", {}).get("ports", [])
    if not ports:
        _fail(f"{service['metadata']['name']} has no ports")
    if port is None:
        return ports[0]
    for candidate in ports:
        if port in (candidate.get("name"), str(candidate["port"])):
            return candidate
    names = ", ".join(str(p.get("name") or p["port"]) for p in ports)
    _fail(f"--port: {port!r} is not a port of {service['metadata']['name']} ({names})")


def _get_service(api: LabApi, service: str) -> dict[str, Any]:
    namespace, name = _split_name(service)
    try:
        return api.get_service(namespace, name)
    except LabApiError as exc:
        _fail(str(exc))


# ------------------------------------------------------------------------ up / down


@app.command("up")
def up_command(
    proxy_mode: Annotated[
        ProxyMode, typer.Option("--proxy-mode", help="The mode node-proxy runs in.")
    ] = ProxyMode.IPTABLES,
    sources: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            help="Manifests for the API server (repeatable; default: the repository's examples/).",
        ),
    ] = None,
) -> None:
    """Build the lab and start node-proxy run in it; print what to try."""
    _need_root()
    folder = lab_dir()
    state = load()
    if state is not None:
        if supervisor_running(state):
            _fail(f"a lab is up already ({state.mode}); take it down with: node-proxy lab down")
        typer.echo("Removing the remains of an earlier lab first.")
        down()
    manifests = list(sources or [])
    if not manifests:
        examples = layout.examples_dir()
        if examples is None:
            _fail("--from: no examples/ folder next to this kubenet; name the manifests")
        manifests = [examples]
    for path in manifests:
        if not path.exists():
            _fail(f"--from: {path} does not exist")

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "kubenet.lab.supervisor", "--mode", proxy_mode.value]
    argv += [arg for path in manifests for arg in ("--from", str(path.resolve()))]
    with (folder / "supervisor.log").open("ab") as log:
        supervisor = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C or a closed terminal here does not reach it.
            start_new_session=True,
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while True:
        state = load()
        if state is not None and state.ready:
            break
        if supervisor.poll() is not None or time.monotonic() > deadline:
            why = (
                f"exited with status {supervisor.returncode}"
                if supervisor.returncode is not None
                else f"was not ready within {UP_TIMEOUT:.0f}s"
            )
            # The logs go with the lab; say what they said first.
            tail = _tail(folder / "supervisor.log", 5) + _tail(folder / "node-proxy.log", 5)
            down()
            _fail(f"the lab {why}:\n" + "\n".join(tail))
        time.sleep(0.1)
    typer.echo(what_to_try(state, folder))


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [f"{path.name}: {line}" for line in text.splitlines()[-lines:]]


def what_to_try(state: LabState, folder: Path) -> str:
    """The text ``lab up`` ends with."""
    return "\n".join(
        [
            f"The lab is up: node-proxy runs in {state.mode} mode in the node namespace "
            f"{state.netns('node')},",
            f"watching the API server at {state.api_url}.",
            "",
            "Try:",
            "  node-proxy lab curl web              # HTTP from the client to web's ClusterIP",
            "  node-proxy lab curl web --count 20   # which pods answer",
            "  node-proxy lab scale web 1           # one pod serves web now; curl again",
            "  node-proxy lab trace web             # the rules that packet goes through",
            "  node-proxy lab rules                 # what node-proxy programmed, from the kernel",
            "  node-proxy lab exec -- kubectl get endpointslices -n demo",
            "  node-proxy lab down                  # remove everything",
            "",
            f"node-proxy's log: {folder / 'node-proxy.log'}",
        ]
    )


@app.command("down")
def down_command() -> None:
    """Stop everything the lab started and delete what it made (also after a crash)."""
    _need_root()
    removed = down()
    if not removed.anything:
        typer.echo("No lab was up.")
        return
    for process in removed.processes:
        typer.echo(f"stopped {process}")
    for netns in removed.namespaces:
        typer.echo(f"deleted namespace {netns}")
    typer.echo("The lab is down.")


@app.command("status")
def status_command() -> None:
    """What the lab recorded, and which of its processes run."""
    state = load()
    if state is None:
        typer.echo("No lab is up.")
        return
    alive = supervisor_running(state)
    typer.echo(f"mode:        {state.mode}")
    typer.echo(f"ready:       {'yes' if state.ready and alive else 'no'}")
    typer.echo(f"supervisor:  pid {state.supervisor_pid} ({'running' if alive else 'gone'})")
    typer.echo(f"API server:  {state.api_url or '-'}")
    typer.echo(f"kubeconfig:  {state.kubeconfig or '-'}")
    for role, netns in state.namespaces.items():
        typer.echo(f"namespace:   {role:<7} {netns}")
    for name, pid in state.pids.items():
        running = "running" if is_running(pid, program_of(name)) else "gone"
        typer.echo(f"process:     {name:<10} pid {pid} ({running})")


# ----------------------------------------------------------------- poking at it


def _ask(netns: str, protocol: str, ip: str, port: int, timeout: float) -> Reply | str:
    """One request from inside ``netns``: the pod's reply, or what went wrong."""

    def tcp() -> Reply | str:
        try:
            answer = http_request(ip, port, "/", timeout=timeout)
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return exc.strerror or str(exc)
        return parse_reply(answer.body)

    def udp() -> Reply | str:
        with socket.socket(
            socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM
        ) as s:
            s.settimeout(timeout)
            try:
                s.connect((ip, port))
                s.send(b"hello\n")
                return parse_reply(s.recv(2048))
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "timeout"

    return call_in(netns, tcp if protocol == "TCP" else udp)


_FAILURES = {
    "refused": "connection refused (a REJECT rule: no endpoints; or nothing listens there)",
    "timeout": "no answer (dropped, or sent to an address nobody answers for)",
}


@app.command("curl")
def curl_command(
    service: Annotated[str, typer.Argument(help="A Service: NAME (namespace demo) or NS/NAME.")],
    port: Annotated[
        str | None, typer.Option("--port", help="Port name or number (default: the first).")
    ] = None,
    source: Annotated[
        str, typer.Option("--from", help="Where the request starts: client, node or a pod.")
    ] = "client",
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many requests.")] = 1,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 2.0,
) -> None:
    """Send real requests to a Service's ClusterIP and say which pod answered."""
    _need_root()
    state = _running_lab()
    obj = _get_service(LabApi(state), service)
    spec_port = _service_port(obj, port)
    ip = obj["spec"]["clusterIPs"][0] if obj["spec"].get("clusterIPs") else obj["spec"]["clusterIP"]
    protocol = str(spec_port.get("protocol", "TCP"))
    netns, src = _source(state, source)
    name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
    target = f"{ip}:{spec_port['port']}/{protocol.lower()}"
    answers = [_ask(netns, protocol, ip, int(spec_port["port"]), timeout) for _ in range(count)]
    if count == 1:
        answer = answers[0]
        if isinstance(answer, Reply):
            typer.echo(
                f"{answer.pod} answered {name} ({target}) on {answer.endpoint}; "
                f"it saw the request come from {answer.peer}"
            )
        else:
            typer.echo(f"{name} ({target}) from {source}: {_FAILURES.get(answer, answer)}")
            raise typer.Exit(1)
        return
    tally = collections.Counter(a.pod if isinstance(a, Reply) else a for a in answers)
    typer.echo(f"{count} requests from {source} ({src}) to {name} ({target}):")
    for who, times in sorted(tally.items()):
        typer.echo(f"  {who:<8} {times}")


@app.command("scale")
def scale_command(
    service: Annotated[str, typer.Argument(help="A Service: NAME (namespace demo) or NS/NAME.")],
    replicas: Annotated[int, typer.Argument(help="How many of the lab's pods serve it.")],
) -> None:
    """Make N of the lab's pods serve a Service, by rewriting its EndpointSlices."""
    _need_root()
    state = _running_lab()
    api = LabApi(state)
    obj = _get_service(api, service)
    meta = obj["metadata"]
    try:
        slices = api.service_slices(meta["namespace"], meta["name"])
        plan = plan_scale(obj, slices, layout.pods(), replicas)
        for updated in plan.update:
            api.put_slice(updated)
        for created in plan.create:
            api.create_slice(created)
        for name in plan.delete:
            api.delete_slice(meta["namespace"], name)
    except (ScaleError, LabApiError) as exc:
        _fail(str(exc))
    who = ", ".join(plan.pods) or "no pod"
    typer.echo(f"{meta['namespace']}/{meta['name']}: served by {who}")


@app.command("trace")
def trace_command(
    service: Annotated[
        str | None, typer.Argument(help="A Service (its ClusterIP and first port).")
    ] = None,
    source: Annotated[
        str, typer.Option("--from", help="Where the packet starts: client, node or a pod.")
    ] = "client",
    dst: Annotated[str | None, typer.Option("--dst", help="Destination IP instead.")] = None,
    dport: Annotated[int | None, typer.Option("--dport", help="Destination port.")] = None,
    port: Annotated[str | None, typer.Option("--port", help="The Service's port.")] = None,
    protocol: Annotated[Protocol | None, typer.Option("--protocol", help="L4 protocol.")] = None,
    output: Annotated[Output, typer.Option("-o", "--output", help="Output format.")] = Output.TEXT,
) -> None:
    """node-proxy trace over the lab's live Services, EndpointSlices and Nodes."""
    _need_root()
    state = _running_lab()
    api = LabApi(state)
    proto = protocol.value if protocol else "tcp"
    if service is not None:
        obj = _get_service(api, service)
        spec_port = _service_port(obj, port)
        dst = dst or obj["spec"]["clusterIP"]
        dport = dport or int(spec_port["port"])
        proto = protocol.value if protocol else str(spec_port.get("protocol", "TCP")).lower()
    if dst is None or dport is None:
        _fail("name a Service, or give --dst and --dport")
    _, src = _source(state, source)
    try:
        objects = [
            obj for kind in ("nodes", "services", "endpointslices") for obj in api.list_all(kind)
        ]
    except LabApiError as exc:
        _fail(str(exc))
    with tempfile.TemporaryDirectory(prefix="kubenet-lab-") as tmp:
        manifest = Path(tmp) / "cluster.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        argv = [
            sys.executable, "-m", "kubenet.cli.node_proxy", "trace",
            "--from", str(manifest),
            "--proxy-mode", state.mode,
            "--hostname-override", layout.NODE_NAME,
            "--cluster-cidr", ",".join(layout.CLUSTER_CIDRS),
            "--src", src, "--dst", dst, "--dport", str(dport), "--protocol", proto,
            "-o", output.value,
        ]  # fmt: skip
        done = subprocess.run(argv, check=False)
    raise typer.Exit(done.returncode)


@app.command("rules")
def rules_command() -> None:
    """The rules node-proxy has programmed, read back from the node's kernel."""
    _need_root()
    state = _running_lab()

    def fetch() -> str:
        answer = http_request("127.0.0.1", layout.METRICS_PORT, "/rules", timeout=10.0)
        return answer.text

    try:
        typer.echo(call_in(state.netns("node"), fetch), nl=False)
    except OSError as exc:
        _fail(f"node-proxy's metrics address does not answer: {exc}")


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_command(
    ctx: typer.Context,
    where: Annotated[
        str, typer.Option("--in", help="The namespace: node (default), client or a pod.")
    ] = "node",
) -> None:
    """Run a command inside a lab namespace, with KUBECONFIG set to the lab's API server."""
    _need_root()
    state = _running_lab()
    argv = list(ctx.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        _fail("name a command, e.g.: node-proxy lab exec -- kubectl get svc -A")
    netns, _ = _source(state, where)
    env = {**os.environ, "KUBECONFIG": state.kubeconfig}
    os.execvpe("ip", ["ip", "netns", "exec", netns, *argv], env)


def main() -> None:
    """``python -m kubenet.lab``."""
    command = typer.main.get_command(app)
    try:
        # With standalone_mode off, a typer.Exit inside a command comes back as the code.
        result = command.main(args=sys.argv[1:], prog_name=PROG, standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Click-style usage errors (Typer carries its own Click): one line, status 2.
        code = getattr(exc, "exit_code", None)
        fmt = getattr(exc, "format_message", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(0)
        if isinstance(code, int) and callable(fmt):
            print(f"{PROG}: error: {fmt()}", file=sys.stderr)
            sys.exit(code)
        raise
