"""node-proxy's settings: kube-proxy's flags and its KubeProxyConfiguration file.

``--config FILE`` reads a ``kubeproxy.config.k8s.io/v1alpha1`` KubeProxyConfiguration
(YAML or JSON); flags given on the command line override what the file says, and
what neither says takes kube-proxy's defaults. The file is decoded strictly, as
kube-proxy decodes it: an unknown field is an error. Fields this implementation does
not act on (conntrack sysctls, OOM score, Windows settings, ...) are accepted and
listed by :attr:`ProxyConfig.ignored`, so the daemon can say so once.

Durations are Go's (``30s``, ``1m0s``, ``500ms``, ``1h30m``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from kubenet.options import DEFAULT_MASQUERADE_BIT, DetectLocalMode
from kubenet.render import ProxyMode

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"


class ConfigError(ValueError):
    """A setting is malformed or unknown (the message names it)."""


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """A Go duration (``1m30s``, ``250ms``, ``0``) in seconds."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ConfigError(f"{what}: invalid duration {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Seconds as Go prints a time.Duration (``30s``, ``1m0s``, ``500ms``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs:g}s"


@dataclass(frozen=True)
class ProxyConfig:
    """Everything ``node-proxy run`` needs to know, with kube-proxy's defaults."""

    kubeconfig: str = ""
    master: str = ""
    mode: ProxyMode = ProxyMode.IPTABLES
    hostname_override: str = ""
    cluster_cidr: str = ""
    detect_local_mode: DetectLocalMode = DetectLocalMode.CLUSTER_CIDR
    pod_bridge_interface: str = ""
    pod_interface_name_prefix: str = ""
    masquerade_all: bool = False
    masquerade_bit: int = DEFAULT_MASQUERADE_BIT
    nodeport_addresses: tuple[str, ...] = ()
    healthz_bind_address: str = "0.0.0.0:10256"
    metrics_bind_address: str = "127.0.0.1:10249"
    iptables_sync_period: float = 30.0
    iptables_min_sync_period: float = 1.0
    nftables_sync_period: float = 30.0
    nftables_min_sync_period: float = 1.0
    ipvs_sync_period: float = 30.0
    ipvs_min_sync_period: float = 0.0
    ipvs_scheduler: str = ""
    verbosity: int = 0
    dry_run: bool = False
    #: Settings of the file this implementation accepts but does not act on.
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @property
    def sync_period(self) -> float:
        """The sync period of the chosen mode: the longest time between full syncs."""
        return {
            ProxyMode.IPTABLES: self.iptables_sync_period,
            ProxyMode.NFTABLES: self.nftables_sync_period,
            ProxyMode.IPVS: self.ipvs_sync_period,
        }[self.mode]

    @property
    def min_sync_period(self) -> float:
        """The min sync period of the chosen mode: the shortest time between syncs."""
        return {
            ProxyMode.IPTABLES: self.iptables_min_sync_period,
            ProxyMode.NFTABLES: self.nftables_min_sync_period,
            ProxyMode.IPVS: self.ipvs_min_sync_period,
        }[self.mode]

    def validate(self) -> ProxyConfig:
        """Check cross-field rules, as kube-proxy's validation does; return self."""
        for name in ("healthz_bind_address", "metrics_bind_address"):
            value = getattr(self, name)
            if value:
                split_host_port(value, "--" + name.replace("_", "-"))
        families = [":" in _cidr(c, "--cluster-cidr") for c in split_list(self.cluster_cidr)]
        if len(families) != len(set(families)):
            raise ConfigError("--cluster-cidr: at most one CIDR per IP family")
        for value in self.nodeport_addresses:
            if value != "primary":
                _cidr(value, "--nodeport-addresses")
        if "primary" in self.nodeport_addresses and len(self.nodeport_addresses) > 1:
            raise ConfigError("--nodeport-addresses: 'primary' cannot be combined with CIDRs")
        if not 0 <= self.masquerade_bit <= 31:
            raise ConfigError("--iptables-masquerade-bit: must be within 0..31")
        mode = self.detect_local_mode
        if mode is DetectLocalMode.BRIDGE_INTERFACE and not self.pod_bridge_interface:
            raise ConfigError("--detect-local-mode BridgeInterface needs --pod-bridge-interface")
        if mode is DetectLocalMode.INTERFACE_NAME_PREFIX and not self.pod_interface_name_prefix:
            raise ConfigError(
                "--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix"
            )
        for name in (
            "iptables_sync_period",
            "nftables_sync_period",
            "ipvs_sync_period",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be greater than 0")
        if self.min_sync_period > self.sync_period:
            raise ConfigError(
                f"the {self.mode.value} min sync period ({format_duration(self.min_sync_period)})"
                f" must not exceed the sync period ({format_duration(self.sync_period)})"
            )
        return self


def split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) with a valid IP (empty host: every address)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: {value!r} is not an address:port")
    host = host.strip("[]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{what}: {host!r} is not an IP address") from None
    return host, int(port)


def _cidr(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a valid CIDR") from None


# ----------------------------------------------------------- the configuration file

#: v1alpha1 fields and where they go: a ProxyConfig field, or None (accepted, unused).
_TOP: dict[str, str | None] = {
    "hostnameOverride": "hostname_override",
    "bindAddress": None,
    "healthzBindAddress": "healthz_bind_address",
    "metricsBindAddress": "metrics_bind_address",
    "bindAddressHardFail": None,
    "enableProfiling": None,
    "showHiddenMetricsForVersion": None,
    "mode": "mode",
    "detectLocalMode": "detect_local_mode",
    "clusterCIDR": "cluster_cidr",
    "nodePortAddresses": "nodeport_addresses",
    "oomScoreAdj": None,
    "configSyncPeriod": None,
    "portRange": None,
    "featureGates": None,
    "logging": None,
    "windowsRunAsService": None,
    "udpIdleTimeout": None,
}
_SECTIONS: dict[str, dict[str, str | None]] = {
    "clientConnection": {
        "kubeconfig": "kubeconfig",
        "acceptContentTypes": None,
        "contentType": None,
        "qps": None,
        "burst": None,
    },
    "iptables": {
        "masqueradeAll": "masquerade_all",
        "masqueradeBit": "masquerade_bit",
        "syncPeriod": "iptables_sync_period",
        "minSyncPeriod": "iptables_min_sync_period",
        "localhostNodePorts": None,
    },
    "nftables": {
        "masqueradeAll": "masquerade_all",
        "masqueradeBit": "masquerade_bit",
        "syncPeriod": "nftables_sync_period",
        "minSyncPeriod": "nftables_min_sync_period",
    },
    "ipvs": {
        "syncPeriod": "ipvs_sync_period",
        "minSyncPeriod": "ipvs_min_sync_period",
        "scheduler": "ipvs_scheduler",
        "excludeCIDRs": None,
        "strictARP": None,
        "tcpTimeout": None,
        "tcpFinTimeout": None,
        "udpTimeout": None,
    },
    "detectLocal": {
        "bridgeInterface": "pod_bridge_interface",
        "interfaceNamePrefix": "pod_interface_name_prefix",
    },
    "conntrack": {
        "maxPerCore": None,
        "min": None,
        "tcpEstablishedTimeout": None,
        "tcpCloseWaitTimeout": None,
        "tcpBeLiberal": None,
        "udpTimeout": None,
        "udpStreamTimeout": None,
    },
    "winkernel": {
        "networkName": None,
        "sourceVip": None,
        "enableDSR": None,
        "rootHnsEndpointName": None,
        "forwardHealthCheckVip": None,
    },
}


def load_file(path: str | Path) -> dict[str, Any]:
    """The settings a KubeProxyConfiguration file gives, as ProxyConfig field values.

    Only fields present in the file are returned; ``ignored`` lists accepted fields
    that have no effect here.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--config: {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path}: not YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"--config: {path}: not a KubeProxyConfiguration")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ConfigError(
            f"--config: {path}: want apiVersion {API_VERSION} and kind {KIND}, "
            f"got {doc.get('apiVersion')!r} and {doc.get('kind')!r}"
        )
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in doc.items():
        if key in ("apiVersion", "kind"):
            continue
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"--config: {key}: must be an object")
            for sub, subvalue in value.items():
                target = _SECTIONS[key].get(sub, "")
                if target == "":
                    raise ConfigError(_unknown(f"{key}.{sub}"))
                _take(out, ignored, f"{key}.{sub}", target, subvalue)
            continue
        target = _TOP.get(key, "")
        if target == "":
            raise ConfigError(_unknown(key))
        _take(out, ignored, key, target, value)
    if ignored:
        out["ignored"] = tuple(ignored)
    return out


def _unknown(path: str) -> str:
    return f'--config: strict decoding error: unknown field "{path}"'


def _take(
    out: dict[str, Any], ignored: list[str], path: str, target: str | None, value: Any
) -> None:
    if value is None or value == "" or value == [] or value == {}:
        return
    if target is None:
        ignored.append(path)
        return
    if target in out and out[target] != _convert(path, target, value):
        # iptables.masqueradeAll and nftables.masqueradeAll both set one switch.
        out[target] = out[target] or _convert(path, target, value)
        return
    out[target] = _convert(path, target, value)


def _convert(path: str, target: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ProxyConfig)}[target]
    try:
        if target.endswith("sync_period"):
            if not isinstance(value, str):
                raise ConfigError(f"--config: {path}: want a duration string")
            return parse_duration(value, f"--config: {path}")
        if target == "mode":
            return ProxyMode(str(value))
        if target == "detect_local_mode":
            return DetectLocalMode(str(value))
        if target == "nodeport_addresses":
            if not isinstance(value, list):
                raise ConfigError(f"--config: {path}: want a list")
            return tuple(str(v) for v in value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"--config: {path}: want true or false")
            return value
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"--config: {path}: want an integer")
            return value
        if not isinstance(value, str):
            raise ConfigError(f"--config: {path}: want a string")
        return value
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--config: {path}: invalid value {value!r}") from None


def resolve(flags: Mapping[str, Any], config_file: str | None = None) -> ProxyConfig:
    """Defaults, then the file, then the flags given (values that are not None)."""
    values: dict[str, Any] = load_file(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    known = {f.name for f in fields(ProxyConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return replace(ProxyConfig(), **values).validate()
