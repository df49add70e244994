"""The reference pages against the code: CLIs, upstream flag tables, cluster-only commands.

The CLI and metrics sections are generated at build time by docs/hooks/reference.py;
these tests check the generator covers every command and flag, that the hand-kept
"coming from upstream" tables name only flags that exist and leave none out, that
commands the docs cannot run (they need a real cluster) still parse, and that the
site builds, strictly and without a network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.docs.console import blocks
from tests.docs.shell import REPO

DOCS = REPO / "docs"
OTHERS = {"apiserver.md", "api-proxy.md", "node-proxy.md"}
PAGES = sorted(p for p in DOCS.glob("**/*.md") if p.name not in OTHERS)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load("reference")


def _options(command: Any) -> set[str]:
    return {
        name
        for p in command.params
        if p.param_type_name == "option"
        for name in reference.option_names(p)
    }


def _all_commands() -> list[tuple[str, Any]]:
    return [
        *reference.commands(reference.node_proxy_group(), "node-proxy"),
        *reference.commands(reference.api_proxy_group(), "api-proxy"),
    ]


# ----------------------------------------------------------------------- generated


def test_cli_reference_lists_every_command_and_flag() -> None:
    text = reference.expand("<!-- generated: cli node-proxy -->\n<!-- generated: cli api-proxy -->")
    for path, command in _all_commands():
        section = text.split(f"### `{path}`", 1)
        assert len(section) == 2, f"no section for {path}"
        body = section[1].split("### ", 1)[0]
        for name in _options(command):
            assert f"`{name}`" in body, f"{path}: {name} missing"


def test_cli_reference_includes_the_lab_and_its_choices() -> None:
    text = reference.expand("<!-- generated: cli node-proxy -->")
    assert "### `node-proxy lab up`" in text
    # Enum-valued flags list their values.
    row = next(line for line in text.splitlines() if line.startswith("| `--proxy-mode`"))
    assert "`iptables`" in row and "`nftables`" in row and "`ipvs`" in row


def test_metrics_reference_comes_from_the_registries() -> None:
    node = reference.node_proxy_metrics()
    assert "kubeproxy_sync_proxy_rules_duration_seconds" in node
    assert node["kubeproxy_sync_proxy_rules_duration_seconds"]["labels"] == ("ip_family",)
    assert node["kubeproxy_sync_proxy_rules_nftables_sync_failures_total"]["modes"] == ["nftables"]
    assert all(name.startswith("kubeproxy_") for name in node)
    api = reference.api_proxy_metrics()
    assert api["apiproxy_requests_total"]["labels"] == ("cluster", "method", "code")
    assert all(name.startswith("apiproxy_") for name in api)
    table = reference.expand("<!-- generated: metrics node-proxy -->")
    assert "| `kubeproxy_network_programming_duration_seconds` | histogram |" in table


def test_unknown_generated_sections_fail_the_build() -> None:
    with pytest.raises(ValueError, match="unknown generated section"):
        reference.expand("<!-- generated: cli kube-proxy -->")


def test_docstring_roles_become_inline_code() -> None:
    roles = _load("griffe_roles")
    text = "See :class:`kubenet.model.ServiceMap` and :mod:`~kubenet.forward.filter`::"
    assert roles.markdown_of(text) == "See `kubenet.model.ServiceMap` and `filter`:"


# ------------------------------------------------------------ coming from upstream

#: Every flag kube-proxy registers (cmd/kube-proxy/app/options.go AddFlags; klog's
#: own flags are covered by one row).
_KUBE_PROXY = (
    "config write-config-to cleanup feature-gates kubeconfig master kube-api-content-type "
    "kube-api-burst kube-api-qps hostname-override bind-address healthz-bind-address "
    "metrics-bind-address bind-address-hard-fail profiling show-hidden-metrics-for-version "
    "init-only proxy-mode iptables-masquerade-bit masquerade-all iptables-localhost-nodeports "
    "iptables-sync-period iptables-min-sync-period ipvs-sync-period ipvs-min-sync-period "
    "ipvs-scheduler ipvs-exclude-cidrs ipvs-strict-arp ipvs-tcp-timeout ipvs-tcpfin-timeout "
    "ipvs-udp-timeout detect-local-mode pod-bridge-interface pod-interface-name-prefix "
    "cluster-cidr nodeport-addresses oom-score-adj conntrack-max-per-core conntrack-min "
    "conntrack-tcp-timeout-established conntrack-tcp-timeout-close-wait "
    "conntrack-tcp-be-liberal conntrack-udp-timeout conntrack-udp-timeout-stream "
    "config-sync-period healthz-port metrics-port v vmodule"
)
KUBE_PROXY_FLAGS = _KUBE_PROXY.split()
#: kubectl proxy's flags and the kubectl global flags it honours or could.
_KUBECTL_PROXY = (
    "port address accept-hosts accept-paths reject-paths reject-methods api-prefix www "
    "www-prefix unix-socket disable-filter keepalive append-server-path kubeconfig context "
    "cluster user server token certificate-authority client-certificate client-key "
    "insecure-skip-tls-verify tls-server-name as as-group as-uid request-timeout namespace "
    "cache-dir match-server-version disable-compression username password profile "
    "warnings-as-errors v vmodule"
)
KUBECTL_PROXY_FLAGS = _KUBECTL_PROXY.split()

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z](?![\w-]))")


def _rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _flags(cell: str) -> set[str]:
    return {f for code in re.findall(r"`([^`]*)`", cell) for f in FLAG.findall(code)}


def _check_table(section: str, upstream: list[str], ours: set[str], everything: set[str]) -> None:
    rows = _rows(section)
    upstream_named = {f.lstrip("-") for row in rows for f in _flags(row[0])}
    kubenet_named = {f for row in rows for f in _flags(row[1])}
    missing = [f for f in upstream if f not in upstream_named]
    assert not missing, f"upstream flags not in the tables: {missing}"
    invented = kubenet_named - everything
    assert not invented, f"flags named that the CLI does not have: {sorted(invented)}"
    unlisted = ours - kubenet_named
    assert not unlisted, f"CLI flags the tables do not list: {sorted(unlisted)}"


def test_kube_proxy_table_maps_every_flag_both_ways() -> None:
    text = (DOCS / "coming-from-upstream.md").read_text()
    section = _section(text, "## kube-proxy", "## kubectl proxy")
    commands = dict(reference.commands(reference.node_proxy_group(), "node-proxy"))
    run = _options(commands["node-proxy run"])
    everything = (
        run | _options(commands["node-proxy render"]) | _options(commands["node-proxy trace"])
    )
    _check_table(section, KUBE_PROXY_FLAGS, run, everything)


def test_kubectl_proxy_table_maps_every_flag_both_ways() -> None:
    text = (DOCS / "coming-from-upstream.md").read_text()
    section = _section(text, "## kubectl proxy", "## Deliberate differences")
    serve = _options(
        dict(reference.commands(reference.api_proxy_group(), "api-proxy"))["api-proxy serve"]
    )
    _check_table(section, KUBECTL_PROXY_FLAGS, serve, serve)


# ----------------------------------------------------------- blocks that are not run


def test_every_shell_block_is_a_checked_console_block() -> None:
    for page in PAGES:
        for block in blocks(page):
            assert block.language == "console", (
                f"{block.where}: use ```console, not {block.language}"
            )
            assert block.commands, f"{block.where}: a console block without a $ command"
            if "skip" in block.attrs:
                assert block.attrs["skip"], f"{block.where}: skip needs a reason"


def _cluster_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for block in blocks(page):
            if "cluster" in block.attrs:
                for command in block.commands:
                    argv = shlex.split(command.text.replace("\\\n", " "))
                    found.append((f"{block.where}", argv[1:] if argv[0] == "sudo" else argv))
    return found


CLUSTER = _cluster_commands()


@pytest.mark.parametrize("where,argv", CLUSTER, ids=[" ".join(a[:3]) for _, a in CLUSTER])
def test_cluster_commands_parse_and_name_real_files(where: str, argv: list[str]) -> None:
    for word in argv:
        value = word.split("=", 1)[-1]
        if value.startswith(("deploy/", "examples/")):
            assert (REPO / value).exists(), f"{where}: {value} does not exist"
    if argv[0] in ("node-proxy", "api-proxy"):
        group = (
            reference.node_proxy_group() if argv[0] == "node-proxy" else reference.api_proxy_group()
        )
        name, *args = argv[1:]
        command = group.commands[name]
        command.make_context(name, args)  # raises on an unknown flag or a bad value
    # node-proxy inside the image, as the docs run it through kubectl debug.
    if "node-proxy-entrypoint" in argv:
        name, *args = argv[argv.index("node-proxy-entrypoint") + 1 :]
        reference.node_proxy_group().commands[name].make_context(name, args)


def test_cluster_commands_exist() -> None:
    """The migration page's commands are among those checked above."""
    texts = [" ".join(argv) for _, argv in CLUSTER]
    assert any("kube-proxy-patch.yaml" in t for t in texts)
    assert any("node-proxy-entrypoint cleanup" in t for t in texts)


# ---------------------------------------------------------------------- the site


@pytest.mark.timeout(300)
def test_site_builds_strictly_and_offline(tmp_path: Path) -> None:
    """``mkdocs build --strict``, in a network namespace with nothing but loopback
    where the tests run as root, so a plugin that fetches anything fails the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("needs the docs extra (mkdocs, mkdocs-material, mkdocstrings)")
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "--net", "--", *argv]
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("two-proxies", "two-proxies.pt", "tutorial", "cli", "metrics-and-flags"):
        assert (site / page / "index.html").exists() or (site / f"{page}.html").exists(), page
    cli = next(site.glob("cli*/index.html"), None) or site / "cli.html"
    assert "node-proxy lab up" in cli.read_text()
