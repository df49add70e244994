"""node-proxy's settings: Go durations, the KubeProxyConfiguration file, flags over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenet.node.config import (
    ConfigError,
    ProxyConfig,
    format_duration,
    load_file,
    parse_duration,
    resolve,
)
from kubenet.options import DetectLocalMode
from kubenet.render import ProxyMode


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("1m0s", 60),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1h", 3600),
        ("0", 0),
        ("1.5s", 1.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "s", "1x", "-1s", "1s2"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(text, "--iptables-sync-period")


def test_durations_print_as_go_prints_them() -> None:
    assert [format_duration(s) for s in (0, 0.25, 1, 30, 60, 90, 3600)] == [
        "0s",
        "250ms",
        "1s",
        "30s",
        "1m0s",
        "1m30s",
        "1h0m0s",
    ]


def test_defaults_are_kube_proxys() -> None:
    config = resolve({})
    assert config.mode is ProxyMode.IPTABLES
    assert config.healthz_bind_address == "0.0.0.0:10256"
    assert config.metrics_bind_address == "127.0.0.1:10249"
    assert (config.sync_period, config.min_sync_period) == (30.0, 1.0)
    assert config.masquerade_bit == 14 and not config.masquerade_all
    assert config.detect_local_mode is DetectLocalMode.CLUSTER_CIDR


FILE = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: node-a
clusterCIDR: 10.244.0.0/16,fd00:244::/32
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.conf
  qps: 50
nftables:
  masqueradeAll: true
  syncPeriod: 1m0s
  minSyncPeriod: 2s
iptables:
  masqueradeBit: 15
detectLocalMode: InterfaceNamePrefix
detectLocal:
  interfaceNamePrefix: veth
nodePortAddresses: [primary]
metricsBindAddress: 0.0.0.0:10249
conntrack:
  maxPerCore: 0
oomScoreAdj: -999
"""


def test_the_file_sets_what_it_says(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FILE)
    config = resolve({}, str(path))
    assert config.mode is ProxyMode.NFTABLES
    assert config.hostname_override == "node-a"
    assert config.kubeconfig == "/etc/kubernetes/kube-proxy.conf"
    assert config.masquerade_all and config.masquerade_bit == 15
    assert (config.sync_period, config.min_sync_period) == (60.0, 2.0)
    assert config.detect_local_mode is DetectLocalMode.INTERFACE_NAME_PREFIX
    assert config.pod_interface_name_prefix == "veth"
    assert config.nodeport_addresses == ("primary",)
    assert config.metrics_bind_address == "0.0.0.0:10249"
    assert set(config.ignored) == {"clientConnection.qps", "conntrack.maxPerCore", "oomScoreAdj"}


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FILE)
    config = resolve(
        {"mode": ProxyMode.IPTABLES, "masquerade_all": False, "nftables_sync_period": None},
        str(path),
    )
    assert config.mode is ProxyMode.IPTABLES
    assert not config.masquerade_all
    assert config.nftables_sync_period == 60.0  # not given as a flag: the file's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\n", "want apiVersion"),
        (FILE + "bogus: 1\n", 'unknown field "bogus"'),
        (FILE.replace("qps: 50", "qpsx: 50"), 'unknown field "clientConnection.qpsx"'),
        (FILE.replace("syncPeriod: 1m0s", "syncPeriod: 60"), "want a duration string"),
        (FILE.replace("mode: nftables", "mode: userspace"), "mode: invalid value"),
        (FILE.replace("masqueradeAll: true", "masqueradeAll: yes-please"), "want true or false"),
        ("- a list\n", "not a KubeProxyConfiguration"),
        ("{unclosed", "not YAML"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve({}, str(path))


def test_a_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--config: /nonexistent"):
        load_file("/nonexistent/config.yaml")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"healthz_bind_address": "nowhere"}, "is not an address:port"),
        ({"metrics_bind_address": "example.org:10249"}, "is not an IP address"),
        ({"cluster_cidr": "10.244.0.0/33"}, "not a valid CIDR"),
        ({"cluster_cidr": "10.244.0.0/16,10.245.0.0/16"}, "at most one CIDR per IP family"),
        ({"nodeport_addresses": ("primary", "10.0.0.0/8")}, "cannot be combined"),
        ({"detect_local_mode": DetectLocalMode.BRIDGE_INTERFACE}, "--pod-bridge-interface"),
        (
            {"detect_local_mode": DetectLocalMode.INTERFACE_NAME_PREFIX},
            "--pod-interface-name-prefix",
        ),
        ({"iptables_min_sync_period": 60.0}, "must not exceed the sync period"),
        ({"nftables_sync_period": 0.0}, "must be greater than 0"),
    ],
)
def test_validation(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(flags)


def test_the_mode_picks_its_periods() -> None:
    config = ProxyConfig(mode=ProxyMode.IPVS, ipvs_sync_period=10.0, ipvs_min_sync_period=0.0)
    assert (config.sync_period, config.min_sync_period) == (10.0, 0.0)
