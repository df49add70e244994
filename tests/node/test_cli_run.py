"""`node-proxy run` and `node-proxy cleanup` on the command line: one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubenet.cli._errors import run
from kubenet.cli.node_proxy import app
from kubenet.testing.netns import Netns, missing_kernel_support


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = run(app, "node-proxy", argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if "node-proxy:" in line]
    return code, lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--iptables-sync-period", "soon"], "--iptables-sync-period: invalid duration 'soon'"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "no such file"),
        (["--healthz-bind-address", "nowhere"], "is not an address:port"),
        (["--cluster-cidr", "10.0.0.0/33"], "not a valid CIDR"),
        (["--config", "/nonexistent/config.yaml"], "--config: /nonexistent/config.yaml"),
        (["--proxy-mode", "userspace"], "Invalid value for '--proxy-mode'"),
        (["--iptables-masquerade-bit", "40"], "--iptables-masquerade-bit"),
        (
            ["--detect-local-mode", "BridgeInterface"],
            "--detect-local-mode BridgeInterface needs --pod-bridge-interface",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _run(["run", *argv], capsys)
    assert code == 2
    assert len(lines) == 1 and message in lines[0], lines


def test_no_cluster_to_talk_to_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, lines = _run(["run", "--proxy-mode", "nftables"], capsys)
    assert code == 2
    assert len(lines) == 1 and "not running in a cluster" in lines[0]


def test_a_config_file_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "mode: ipvs\nbogus: true\n"
    )
    code, lines = _run(["run", "--config", str(path)], capsys)
    assert code == 2 and 'unknown field "bogus"' in lines[0]


@pytest.mark.kernel
def test_ipvs_without_ipvs_in_the_kernel_is_one_line(tmp_path: Path) -> None:
    from kubenet.dataplane.ipvs import missing_ipvs

    missing = missing_kernel_support()
    if missing:
        pytest.skip(missing)
    with Netns("cliipvs") as ns:
        if missing_ipvs(ns.name) is None:
            pytest.skip("this kernel has IPVS")
        done = subprocess.run(
            [
                "ip", "netns", "exec", ns.name, sys.executable, "-m", "kubenet.cli.node_proxy",
                "run", "--proxy-mode", "ipvs", "--master", "http://127.0.0.1:1",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if "node-proxy:" in line]
    assert done.returncode == 2
    assert len(errors) == 1 and "--proxy-mode ipvs" in errors[0] and "IPVS" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.kernel
def test_cleanup_command_in_an_empty_namespace_succeeds() -> None:
    missing = missing_kernel_support(tools=("nft", "iptables-save"), nftables=True, iptables=True)
    if missing:
        pytest.skip(missing)
    with Netns("clicleanup") as ns:
        ns.run(["nft", "add table ip kube-proxy"])
        done = subprocess.run(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "kubenet.cli.node_proxy",
             "cleanup"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "kube-proxy" not in ns.run(["nft", "list", "ruleset"]).stdout
