"""node-proxy's offline commands: render and trace from manifests, and how they fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubenet.cli._errors import run
from kubenet.cli.node_proxy import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = str(ROOT / "examples")
DATA = ROOT / "tests" / "data" / "manifests"
NODE = ["--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16,fd00:244::/32"]


def node_proxy(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, "node-proxy", list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_iptables_prints_restore_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = node_proxy(capsys, "render", "--from", EXAMPLES, *NODE)
    assert code == 0, err
    assert "*nat" in out and "*filter" in out and out.rstrip().endswith("COMMIT")
    assert "-A KUBE-SERVICES" in out
    # Every ClusterIP of the examples' IPv4 services appears.
    for ip in ("10.96.0.10", "10.96.0.53", "10.96.0.40", "10.96.0.70", "10.96.0.20"):
        assert f"-d {ip} " in out


def test_render_ipv6_family(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = node_proxy(capsys, "render", "--from", EXAMPLES, *NODE, "--ip-family", "ipv6")
    assert code == 0
    assert "-d fd00:96::120 " in out
    assert "10.96.0.10" not in out


def test_render_nftables_has_a_table_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = node_proxy(
        capsys, "render", "--from", EXAMPLES, *NODE, "--proxy-mode", "nftables"
    )
    assert code == 0
    assert "table ip kube-proxy" in out
    assert "table ip6 kube-proxy" in out


def test_skipped_objects_are_listed_and_the_rest_rendered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = node_proxy(capsys, "render", "--from", str(DATA / "broken.yaml"), *NODE)
    assert code == 0
    assert "-d 10.96.5.1 " in out
    assert "10.96.5.2" not in out
    assert "broken/bad" in err and "70000" in err


def test_kind_list_json_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = node_proxy(capsys, "render", "--from", str(DATA / "list.json"), *NODE)
    assert code == 0, err
    assert "-d 10.96.6.1 " in out and "10.244.1.3:8443" in out


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_trace_json_has_exactly_the_four_keys(
    capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    code, out, err = node_proxy(
        capsys, "trace", "--from", EXAMPLES, *NODE, "--proxy-mode", mode,
        "--src", "10.180.0.2", "--dst", "10.96.0.10", "--dport", "80", "-o", "json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"verdict", "endpoints", "masquerade", "rules"}
    assert result["verdict"] == "DNAT"
    assert result["endpoints"] == ["10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.2:8080"]
    assert result["masquerade"] is True
    assert result["rules"] and all(isinstance(r, str) for r in result["rules"])


def test_trace_text_names_verdict_and_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = node_proxy(
        capsys, "trace", "--from", EXAMPLES, *NODE,
        "--src", "10.244.1.4", "--dst", "10.96.0.20", "--dport", "80",
    )
    assert code == 0
    assert "REJECT" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["render", "--from", "/nonexistent/x.yaml", *NODE], "no such file"),
        (["render", "--from", str(DATA / "invalid.yaml"), *NODE], "invalid YAML"),
        (["render", "--from", EXAMPLES, "--proxy-mode", "userspace"], "--proxy-mode"),
        (["render", "--from", EXAMPLES, "--no-such-flag"], "--no-such-flag"),
        (["render", "--from", EXAMPLES, "--cluster-cidr", "10.0.0.0/33"], "--cluster-cidr"),
        (["render", "--from", EXAMPLES, "--node-ip", "1.2.3"], "--node-ip"),
        (["render"], "--from"),
        (["trace", "--from", EXAMPLES, "--src", "x", "--dst", "10.96.0.10", "--dport", "80"],
         "--src"),
        (["trace", "--from", EXAMPLES, "--src", "10.0.0.1", "--dst", "10.96.0.10",
          "--dport", "70000"], "--dport"),
        (["render", "--from", EXAMPLES, "--detect-local-mode", "BridgeInterface"],
         "--pod-bridge-interface"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _, err = node_proxy(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("node-proxy: error: ")
    assert needle in lines[0]
    assert "Traceback" not in err


def test_console_script_exit_codes() -> None:
    """The installed entry point behaves the same in a real process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "kubenet.cli.node_proxy", "render", "--from", EXAMPLES, *NODE],
        capture_output=True, text=True, env=env, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "kubenet.cli.node_proxy", "render", "--bogus"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
