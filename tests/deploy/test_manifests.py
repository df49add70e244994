"""deploy/: every manifest is valid Kubernetes, and the pieces fit node-proxy and each other.

Schemas come from ``kubernetes-validate``, which ships the Kubernetes JSON schemas
inside the package, so the check runs offline. The strict variant is used: a
misspelt or misplaced field is an error, as ``kubectl apply --validate=strict``
would make it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (the test extra)"
)

from kubenet import watch  # noqa: E402
from kubenet.node import config as node_config  # noqa: E402
from kubenet.render import ProxyMode  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
#: The oldest release node-proxy supports (nftables mode is 1.29+) and the newest known.
VERSIONS = ("1.29.0", "1.33.0")


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


DOCUMENTS = list(_documents())


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"want one {kind}, found {len(found)}"
    return found[0]


def test_deploy_has_every_piece() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "ServiceAccount",
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,doc", DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in DOCUMENTS])
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_misplaced_field() -> None:
    """The schema check is not vacuous: hostNetwork belongs in the pod spec."""
    daemonset = yaml.safe_load(yaml.safe_dump(_one("DaemonSet")))
    daemonset["spec"]["hostNetwork"] = daemonset["spec"]["template"]["spec"].pop("hostNetwork")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)


# ----------------------------------------------------------------- the configuration


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.conf"
    path.write_text(_one("ConfigMap")["data"]["config.conf"])
    return path


def test_configmap_configuration_loads_through_node_proxys_parser(tmp_path: Path) -> None:
    config = node_config.resolve({}, str(_config_file(tmp_path)))
    assert config.mode is ProxyMode.IPTABLES
    assert config.cluster_cidr == "10.244.0.0/16"
    assert config.healthz_bind_address == "0.0.0.0:10256"
    assert config.metrics_bind_address == "127.0.0.1:10249"
    assert (config.sync_period, config.min_sync_period) == (30.0, 1.0)
    # Every setting written there takes effect: nothing is accepted and then ignored.
    assert config.ignored == ()


def test_configmap_configuration_works_in_every_mode(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    for mode in ProxyMode:
        assert node_config.resolve({"mode": mode}, str(path)).mode is mode


def test_the_parser_is_strict_so_the_check_means_something(tmp_path: Path) -> None:
    path = tmp_path / "config.conf"
    path.write_text(_config_file(tmp_path).read_text() + "clusterCidr: 10.0.0.0/8\n")
    with pytest.raises(node_config.ConfigError, match="unknown field"):
        node_config.resolve({}, str(path))


# ------------------------------------------------------------- pieces fit together


def _container() -> dict[str, Any]:
    containers = _one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_daemonset_runs_as_kube_proxy_does() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert _container()["securityContext"] == {"privileged": True}
    mounts = {m["mountPath"] for m in _container()["volumeMounts"]}
    assert {"/run/xtables.lock", "/lib/modules"} <= mounts


def test_liveness_probe_asks_livez_on_the_healthz_port(tmp_path: Path) -> None:
    probe = _container()["livenessProbe"]["httpGet"]
    config = node_config.resolve({}, str(_config_file(tmp_path)))
    _, port = node_config.split_host_port(config.healthz_bind_address, "healthz")
    assert (probe["path"], probe["port"]) == ("/livez", port)


def test_config_flag_points_at_the_mounted_configmap_key() -> None:
    args = _container()["args"]
    config_arg = next(a for a in args if a.startswith("--config="))
    config_path = Path(config_arg.removeprefix("--config="))
    mount = next(m for m in _container()["volumeMounts"] if m["name"] == "config")
    volume = next(
        v for v in _one("DaemonSet")["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    assert volume["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    assert config_path.parent == Path(mount["mountPath"])
    keys = {item["key"]: item["path"] for item in volume["configMap"]["items"]}
    assert keys == {"config.conf": config_path.name}


def test_optional_api_server_keys_name_the_configmap() -> None:
    refs = [
        e["valueFrom"]["configMapKeyRef"]
        for e in _container()["env"]
        if "configMapKeyRef" in e.get("valueFrom", {})
    ]
    assert {r["key"] for r in refs} == {"apiServerHost", "apiServerPort"}
    assert all(r["name"] == "node-proxy" and r["optional"] is True for r in refs)


def test_daemonset_arguments_parse_with_node_proxy_run() -> None:
    """The DaemonSet's arguments are accepted by the real ``node-proxy run``."""
    import typer.main

    from kubenet.cli.node_proxy import app

    group = typer.main.get_command(app)
    args = [a.replace("$(NODE_NAME)", "node-a") for a in _container()["args"]]
    assert args[0] == "run"
    run = group.commands.get("run")  # type: ignore[attr-defined]
    if run is None:
        pytest.skip("node-proxy run is not there yet")
    ctx = run.make_context("run", list(args[1:]))
    assert ctx.params["hostname_override"] == "node-a"


def test_binding_gives_the_role_to_the_daemonsets_account() -> None:
    account = _one("ServiceAccount")["metadata"]
    binding = _one("ClusterRoleBinding")
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert binding["roleRef"]["name"] == _one("ClusterRole")["metadata"]["name"]


def _grants() -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in _one("ClusterRole")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _group_resource(path: str) -> tuple[str, str]:
    # /api/v1/<resource> or /apis/<group>/<version>/<resource>
    parts = path.strip("/").split("/")
    return ("", parts[2]) if parts[0] == "api" else (parts[1], parts[3])


def test_role_grants_exactly_what_node_proxy_watches_and_events() -> None:
    followed = [watch.services(), watch.endpoint_slices(), watch.node("node-a")]
    needed = {(*_group_resource(r.path), verb) for r in followed for verb in ("list", "watch")}
    events = {
        (group, "events", verb)
        for group in ("", "events.k8s.io")
        for verb in ("create", "patch", "update")
    }
    assert _grants() == needed | events
    # Nothing that writes cluster state beyond events, nothing cluster-wide as '*'.
    assert not any("*" in grant for grant in _grants())


# ------------------------------------------------------------------ the image


def _fake_tools(bin_dir: Path, tables: dict[str, str]) -> None:
    """Stand-ins for the iptables save tools, update-alternatives and node-proxy.

    The entrypoint's logic (which backend the node uses) is what is under test; the
    stand-ins print canned tables and record how they were called.
    """
    bin_dir.mkdir()
    log = bin_dir / "calls"
    for name in (
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
    ):
        text = tables.get(name, "")
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(text)}\n")
    (bin_dir / "update-alternatives").write_text(
        f'#!/bin/sh\necho "update-alternatives $*" >> {log}\n'
    )
    (bin_dir / "node-proxy").write_text(f'#!/bin/sh\necho "node-proxy $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def _entrypoint(tmp_path: Path, tables: dict[str, str], env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    _fake_tools(bin_dir, tables)
    done = subprocess.run(
        [str(DEPLOY / "node-proxy-entrypoint.sh"), "run", "--config=/x"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls = (bin_dir / "calls").read_text()
    assert calls.endswith("node-proxy run --config=/x\n")
    assert os.access(DEPLOY / "node-proxy-entrypoint.sh", os.X_OK)
    return calls


HINT = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
RULES = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n"


@pytest.mark.parametrize(
    "tables,backend",
    [
        ({"iptables-legacy-save": HINT}, "legacy"),
        ({"iptables-nft-save": HINT, "iptables-legacy-save": RULES}, "nft"),
        ({"ip6tables-legacy-save": RULES}, "legacy"),
        ({}, "nft"),
    ],
    ids=["kubelet-hint-legacy", "hint-beats-rule-count", "more-legacy-rules", "empty-node"],
)
def test_entrypoint_uses_the_nodes_iptables_backend(
    tmp_path: Path, tables: dict[str, str], backend: str
) -> None:
    calls = _entrypoint(tmp_path, tables)
    assert f"--set iptables /usr/sbin/iptables-{backend}\n" in calls
    assert f"--set ip6tables /usr/sbin/ip6tables-{backend}\n" in calls


def test_entrypoint_backend_can_be_forced(tmp_path: Path) -> None:
    calls = _entrypoint(tmp_path, {"iptables-nft-save": HINT}, {"NODE_PROXY_IPTABLES": "legacy"})
    assert "--set iptables /usr/sbin/iptables-legacy\n" in calls


def test_containerfile_copies_what_the_wheel_is_made_of() -> None:
    """The build stage copies exactly the sources pyproject's packages come from."""
    import tomllib

    text = (DEPLOY / "Containerfile").read_text()
    copied = {
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line and "deploy/" not in line
    }
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    package_dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    assert {"pyproject.toml", "kubenet", "cli"} <= copied
    assert package_dirs <= copied
    assert "COPY deploy/node-proxy-entrypoint.sh" in text
    for tool in ("iptables", "nftables", "ipset", "conntrack", "ipvsadm"):
        assert f" {tool} " in text
