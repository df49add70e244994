"""node-proxy: kube-proxy's job, from the kubenet core.

Offline commands (no cluster needed):

    node-proxy render --from examples/ --proxy-mode nftables --hostname-override node-a
    node-proxy trace  --from examples/ --hostname-override node-a \\
        --src 10.180.0.2 --dst 10.96.0.10 --dport 80 --protocol tcp

Flag names and defaults follow kube-proxy's.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kubenet.lab.cli import app as lab_app
from kubenet.manifests import ManifestError, load_objects, split_objects
from kubenet.model import IPFamily, Protocol
from kubenet.options import DEFAULT_MASQUERADE_BIT, DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render import ProxyMode, render
from kubenet.trace import Packet, TraceResult, trace
from kubenet.translate import Translation, node_info, translate

from ._errors import fail, run

app = typer.Typer(
    name="node-proxy",
    help="kube-proxy's job: Services and EndpointSlices in, kernel rules out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# `node-proxy lab ...`: the hands-on lab lives in kubenet.lab, a library piece.
app.add_typer(lab_app, name="lab")


class Family(StrEnum):
    """--ip-family."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"

    @property
    def ip_family(self) -> IPFamily:
        return IPFamily.IPV4 if self is Family.IPV4 else IPFamily.IPV6


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class L4(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


# Shared flag declarations, spelled as kube-proxy spells them.
FromOpt = Annotated[
    list[Path],
    typer.Option(
        "--from",
        help="Manifest file or directory (YAML or JSON; multi-document and List). Repeatable.",
    ),
]
ModeOpt = Annotated[ProxyMode, typer.Option("--proxy-mode", help="Which proxy mode to use.")]
HostnameOpt = Annotated[
    str | None,
    typer.Option(
        "--hostname-override",
        help="The name of this node (default: the hostname). Decides which endpoints are local.",
    ),
]
NodeIPOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--node-ip",
        help="A node address (repeatable); overrides the addresses of the Node object.",
    ),
]
ClusterCIDROpt = Annotated[
    str,
    typer.Option(
        "--cluster-cidr",
        help="The CIDR range of the pods in the cluster (a comma-separated dual-stack pair "
        "is allowed). Traffic to ClusterIPs from outside it is masqueraded.",
    ),
]
DetectLocalOpt = Annotated[
    DetectLocalMode,
    typer.Option("--detect-local-mode", help="Mode to use to detect local traffic."),
]
BridgeOpt = Annotated[
    str,
    typer.Option(
        "--pod-bridge-interface",
        help="A bridge interface name (with --detect-local-mode BridgeInterface).",
    ),
]
PrefixOpt = Annotated[
    str,
    typer.Option(
        "--pod-interface-name-prefix",
        help="An interface name prefix (with --detect-local-mode InterfaceNamePrefix).",
    ),
]
MasqAllOpt = Annotated[
    bool,
    typer.Option("--masquerade-all", help="SNAT all traffic sent via Service cluster IPs."),
]
MasqBitOpt = Annotated[
    int,
    typer.Option(
        "--iptables-masquerade-bit",
        min=0,
        max=31,
        help="The bit of the fwmark space to mark packets requiring SNAT with.",
    ),
]
NodePortAddrOpt = Annotated[
    str,
    typer.Option(
        "--nodeport-addresses",
        help="Comma-separated CIDRs (or 'primary') of node addresses that accept NodePort "
        "traffic. Empty means every local address.",
    ),
]


@dataclass(frozen=True)
class Loaded:
    """What the offline commands work from."""

    translation: Translation
    options: RenderOptions


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _cidrs(value: str, flag: str) -> tuple[str, ...]:
    out = []
    for part in _split_list(value):
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            fail(f"{flag}: {part!r} is not a valid CIDR")
    return tuple(out)


def _ips(values: list[str], flag: str) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_address(value)))
        except ValueError:
            fail(f"{flag}: {value!r} is not a valid IP address")
    return tuple(out)


def _load(
    sources: list[Path],
    hostname: str | None,
    node_ips: list[str] | None,
    cluster_cidr: str,
    detect_local_mode: DetectLocalMode,
    bridge: str,
    prefix: str,
    masquerade_all: bool,
    masquerade_bit: int,
    nodeport_addresses: str,
    family: IPFamily,
) -> Loaded:
    if not sources:
        fail("--from: at least one manifest file or directory is required")
    try:
        objects = split_objects(load_objects(sources))
    except ManifestError as exc:
        fail(str(exc))
    name = (hostname or socket.gethostname()).strip().lower()
    node = node_info(objects.node(name), name)
    ips = _ips(node_ips, "--node-ip") if node_ips else node.ips

    if detect_local_mode is DetectLocalMode.CLUSTER_CIDR:
        detector = LocalDetector(detect_local_mode, _cidrs(cluster_cidr, "--cluster-cidr"))
    elif detect_local_mode is DetectLocalMode.NODE_CIDR:
        if not node.pod_cidrs:
            fail(f"--detect-local-mode NodeCIDR: node {name!r} has no podCIDRs in the manifests")
        detector = LocalDetector(detect_local_mode, node.pod_cidrs)
    elif detect_local_mode is DetectLocalMode.BRIDGE_INTERFACE:
        if not bridge:
            fail("--detect-local-mode BridgeInterface needs --pod-bridge-interface")
        detector = LocalDetector(detect_local_mode, interface=bridge)
    else:
        if not prefix:
            fail("--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix")
        detector = LocalDetector(detect_local_mode, interface=prefix)

    npa = _split_list(nodeport_addresses)
    if npa != ("primary",):
        npa = _cidrs(nodeport_addresses, "--nodeport-addresses")

    options = RenderOptions(
        node_name=name,
        ip_family=family,
        node_ips=ips,
        local_detector=detector,
        masquerade_all=masquerade_all,
        masquerade_bit=masquerade_bit,
        nodeport_addresses=npa,
    )
    translation = translate(objects.services, objects.endpoint_slices, node)
    for skipped in translation.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    return Loaded(translation, options)


@app.command("render")
def render_command(
    sources: FromOpt = [],  # noqa: B006 - Typer reads list defaults, never mutates them
    proxy_mode: ModeOpt = ProxyMode.IPTABLES,
    hostname_override: HostnameOpt = None,
    node_ip: NodeIPOpt = None,
    cluster_cidr: ClusterCIDROpt = "",
    detect_local_mode: DetectLocalOpt = DetectLocalMode.CLUSTER_CIDR,
    pod_bridge_interface: BridgeOpt = "",
    pod_interface_name_prefix: PrefixOpt = "",
    masquerade_all: MasqAllOpt = False,
    iptables_masquerade_bit: MasqBitOpt = DEFAULT_MASQUERADE_BIT,
    nodeport_addresses: NodePortAddrOpt = "",
    ip_family: Annotated[
        Family | None,
        typer.Option(
            "--ip-family",
            help="Family to render. iptables: one family per restore input (default ipv4); "
            "nftables: both tables in one script unless a family is given.",
        ),
    ] = None,
) -> None:
    """Print the rules for the Services in the manifests, exactly as the kernel tool gets them."""
    families = (
        [ip_family.ip_family]
        if ip_family
        else [IPFamily.IPV4, IPFamily.IPV6]
        if proxy_mode is ProxyMode.NFTABLES
        else [IPFamily.IPV4]
    )
    loaded = _load(
        sources,
        hostname_override,
        node_ip,
        cluster_cidr,
        detect_local_mode,
        pod_bridge_interface,
        pod_interface_name_prefix,
        masquerade_all,
        iptables_masquerade_bit,
        nodeport_addresses,
        families[0],
    )
    texts = []
    for family in families:
        options = replace(loaded.options, ip_family=family)
        texts.append(render(loaded.translation.service_map, options, proxy_mode).text)
    sys.stdout.write("".join(t if t.endswith("\n") else t + "\n" for t in texts))


@app.command("trace")
def trace_command(
    src: Annotated[str, typer.Option("--src", help="Source IP of the packet.")],
    dst: Annotated[str, typer.Option("--dst", help="Destination IP of the packet.")],
    dport: Annotated[int, typer.Option("--dport", min=1, max=65535, help="Destination port.")],
    protocol: Annotated[L4, typer.Option("--protocol", help="L4 protocol.")] = L4.TCP,
    iif: Annotated[
        str | None,
        typer.Option("--iif", help="Input interface (for interface-based local detection)."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="Output format.")
    ] = OutputFormat.TEXT,
    sources: FromOpt = [],  # noqa: B006 - Typer reads list defaults, never mutates them
    proxy_mode: ModeOpt = ProxyMode.IPTABLES,
    hostname_override: HostnameOpt = None,
    node_ip: NodeIPOpt = None,
    cluster_cidr: ClusterCIDROpt = "",
    detect_local_mode: DetectLocalOpt = DetectLocalMode.CLUSTER_CIDR,
    pod_bridge_interface: BridgeOpt = "",
    pod_interface_name_prefix: PrefixOpt = "",
    masquerade_all: MasqAllOpt = False,
    iptables_masquerade_bit: MasqBitOpt = DEFAULT_MASQUERADE_BIT,
    nodeport_addresses: NodePortAddrOpt = "",
) -> None:
    """Walk one packet through the rules the manifests produce: rules hit, verdict, endpoints."""
    src_ip, dst_ip = _ips([src], "--src")[0], _ips([dst], "--dst")[0]
    family = IPFamily.of(dst_ip)
    if IPFamily.of(src_ip) is not family:
        fail("--src and --dst must be of the same IP family")
    loaded = _load(
        sources,
        hostname_override,
        node_ip,
        cluster_cidr,
        detect_local_mode,
        pod_bridge_interface,
        pod_interface_name_prefix,
        masquerade_all,
        iptables_masquerade_bit,
        nodeport_addresses,
        family,
    )
    plan = render(loaded.translation.service_map, loaded.options, proxy_mode)
    packet = Packet(src_ip, dst_ip, Protocol(protocol.value.upper()), dport, iif)
    result = trace(plan, packet)
    if output is OutputFormat.JSON:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_trace(packet, proxy_mode, result)


_VERDICT_STYLE = {"DNAT": "green", "ACCEPT": "cyan", "DROP": "red", "REJECT": "yellow"}


def _print_trace(packet: Packet, mode: ProxyMode, result: TraceResult) -> None:
    console = Console()
    console.print(
        f"[bold]{packet.protocol.value} {packet.src} -> {packet.dst}:{packet.dport}[/bold]"
        f"  ({mode.value})"
    )
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("#", justify="right", style="dim")
    table.add_column("rule hit")
    for number, rule in enumerate(result.rules, 1):
        table.add_row(str(number), rule)
    console.print(table)
    style = _VERDICT_STYLE.get(result.verdict.value, "white")
    console.print(f"verdict:    [bold {style}]{result.verdict.value}[/]")
    console.print(f"endpoints:  {', '.join(result.endpoints) or '-'}")
    console.print(f"masquerade: {'yes' if result.masquerade else 'no'}")


# ------------------------------------------------------------------------- the daemon


@app.command("run")
def run_command(
    kubeconfig: Annotated[
        str | None,
        typer.Option("--kubeconfig", help="Path to a kubeconfig file with authorization."),
    ] = None,
    master: Annotated[
        str | None,
        typer.Option(
            "--master",
            help="The address of the Kubernetes API server (overrides any value in kubeconfig).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) file; "
            "flags given override it.",
        ),
    ] = None,
    proxy_mode: Annotated[
        ProxyMode | None,
        typer.Option("--proxy-mode", help="Which proxy mode to use (default iptables)."),
    ] = None,
    hostname_override: HostnameOpt = None,
    cluster_cidr: Annotated[
        str | None,
        typer.Option(
            "--cluster-cidr",
            help="The CIDR range of the pods in the cluster (a comma-separated dual-stack "
            "pair is allowed), for --detect-local-mode ClusterCIDR.",
        ),
    ] = None,
    detect_local_mode: Annotated[
        DetectLocalMode | None,
        typer.Option(
            "--detect-local-mode", help="Mode to use to detect local traffic (default ClusterCIDR)."
        ),
    ] = None,
    pod_bridge_interface: Annotated[
        str | None, typer.Option("--pod-bridge-interface", help="For BridgeInterface.")
    ] = None,
    pod_interface_name_prefix: Annotated[
        str | None,
        typer.Option("--pod-interface-name-prefix", help="For InterfaceNamePrefix."),
    ] = None,
    masquerade_all: Annotated[
        bool | None,
        typer.Option(
            "--masquerade-all/--no-masquerade-all",
            help="SNAT all traffic sent via Service cluster IPs.",
            show_default=False,
        ),
    ] = None,
    iptables_masquerade_bit: Annotated[
        int | None,
        typer.Option(
            "--iptables-masquerade-bit",
            min=0,
            max=31,
            help="The bit of the fwmark space to mark packets requiring SNAT with (default 14).",
        ),
    ] = None,
    nodeport_addresses: Annotated[
        str | None,
        typer.Option(
            "--nodeport-addresses",
            help="Comma-separated CIDRs (or 'primary') of node addresses that accept NodePort "
            "traffic.",
        ),
    ] = None,
    healthz_bind_address: Annotated[
        str | None,
        typer.Option(
            "--healthz-bind-address",
            help="address:port of /healthz and /livez (default 0.0.0.0:10256; empty: off).",
        ),
    ] = None,
    metrics_bind_address: Annotated[
        str | None,
        typer.Option(
            "--metrics-bind-address",
            help="address:port of /metrics and /rules (default 127.0.0.1:10249; empty: off).",
        ),
    ] = None,
    iptables_sync_period: Annotated[
        str | None,
        typer.Option(
            "--iptables-sync-period",
            metavar="DURATION",
            help="Longest time between full syncs (default 30s).",
        ),
    ] = None,
    iptables_min_sync_period: Annotated[
        str | None,
        typer.Option(
            "--iptables-min-sync-period",
            metavar="DURATION",
            help="Shortest time between syncs (default 1s).",
        ),
    ] = None,
    nftables_sync_period: Annotated[
        str | None,
        typer.Option("--nftables-sync-period", metavar="DURATION", help="(default 30s)"),
    ] = None,
    nftables_min_sync_period: Annotated[
        str | None,
        typer.Option("--nftables-min-sync-period", metavar="DURATION", help="(default 1s)"),
    ] = None,
    ipvs_sync_period: Annotated[
        str | None,
        typer.Option("--ipvs-sync-period", metavar="DURATION", help="(default 30s)"),
    ] = None,
    ipvs_min_sync_period: Annotated[
        str | None,
        typer.Option("--ipvs-min-sync-period", metavar="DURATION", help="(default 0s)"),
    ] = None,
    ipvs_scheduler: Annotated[
        str | None,
        typer.Option("--ipvs-scheduler", help="The IPVS scheduler (default rr)."),
    ] = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Remove every rule, set, table and IPVS entry any mode made, then exit.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Log what each sync would change instead of applying it."),
    ] = False,
    verbosity: Annotated[
        int, typer.Option("-v", "--v", min=0, help="Log verbosity (2: every sync; 4: more).")
    ] = 0,
) -> None:
    """Run kube-proxy's job: watch the API server and keep this node's rules right."""
    import asyncio

    from kubenet.node import daemon
    from kubenet.node.config import ConfigError, parse_duration, resolve

    daemon.setup_logging(verbosity)
    if cleanup:
        raise typer.Exit(daemon.run_cleanup())

    def duration(value: str | None, flag: str) -> float | None:
        return None if value is None else parse_duration(value, flag)

    try:
        flags = {
            "kubeconfig": kubeconfig,
            "master": master,
            "mode": proxy_mode,
            "hostname_override": hostname_override,
            "cluster_cidr": cluster_cidr,
            "detect_local_mode": detect_local_mode,
            "pod_bridge_interface": pod_bridge_interface,
            "pod_interface_name_prefix": pod_interface_name_prefix,
            "masquerade_all": masquerade_all,
            "masquerade_bit": iptables_masquerade_bit,
            "nodeport_addresses": (
                _split_list(nodeport_addresses) if nodeport_addresses is not None else None
            ),
            "healthz_bind_address": healthz_bind_address,
            "metrics_bind_address": metrics_bind_address,
            "iptables_sync_period": duration(iptables_sync_period, "--iptables-sync-period"),
            "iptables_min_sync_period": duration(
                iptables_min_sync_period, "--iptables-min-sync-period"
            ),
            "nftables_sync_period": duration(nftables_sync_period, "--nftables-sync-period"),
            "nftables_min_sync_period": duration(
                nftables_min_sync_period, "--nftables-min-sync-period"
            ),
            "ipvs_sync_period": duration(ipvs_sync_period, "--ipvs-sync-period"),
            "ipvs_min_sync_period": duration(ipvs_min_sync_period, "--ipvs-min-sync-period"),
            "ipvs_scheduler": ipvs_scheduler,
            "verbosity": verbosity,
            "dry_run": dry_run,
        }
        settings = resolve(flags, str(config) if config else None)
    except ConfigError as exc:
        fail(str(exc))
    try:
        code = asyncio.run(daemon.run(settings))
    except daemon.StartupError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("cleanup")
def cleanup_command(
    verbosity: Annotated[int, typer.Option("-v", "--v", min=0, help="Log verbosity.")] = 0,
) -> None:
    """Remove every rule, set, table and IPVS entry any mode made (as run --cleanup)."""
    from kubenet.node import daemon

    daemon.setup_logging(verbosity)
    raise typer.Exit(daemon.run_cleanup())


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(app, "node-proxy"))


if __name__ == "__main__":
    main()
