"""``python -m kubenet.testing.apiserver``: prints its address, writes a kubeconfig, preloads."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3
import yaml

from kubenet.testing.apiserver.__main__ import parse_args

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo}
spec: {containers: [{name: web, image: web:1}]}
status: {phase: Running, podIP: 10.244.1.2}
"""


def test_cli_serves_with_a_kubeconfig_and_preloaded_manifests(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubenet.testing.apiserver",
            "--port",
            "0",
            "--kubeconfig-out",
            str(kubeconfig),
            "--load",
            str(manifest),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("serving on https://127.0.0.1:"), first + proc.stderr.read()
        url = first.split()[-1]
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["current-context"] == "kubenet-token"
        assert {c["name"] for c in config["contexts"]} == {
            "kubenet-token",
            "kubenet-cert",
            "kubenet-viewer",
        }
        assert config["clusters"][0]["cluster"]["server"] == url
        assert kubeconfig.stat().st_mode & 0o077 == 0, "credentials are private"
        token = next(u for u in config["users"] if u["name"] == "token")["user"]["token"]
        ca = tmp_path / "ca.crt"
        ca.write_bytes(
            base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        )
        pool = urllib3.PoolManager(ca_certs=str(ca))
        resp = pool.request(
            "GET",
            f"{url}/api/v1/namespaces/demo/pods/web-1",
            headers={"Authorization": f"Bearer {token}"},
        )
        pod = json.loads(resp.data)
        assert pod["status"]["phase"] == "Running", "preloaded objects keep their status"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


def test_options_map_to_the_server_config() -> None:
    config = parse_args(
        [
            "--port",
            "6443",
            "--insecure-http",
            "--anonymous",
            "--history",
            "50",
            "--service-cidr",
            "10.0.0.0/24",
            "--port-forward",
            "demo/web-1:8080=127.0.0.1:18080",
            "--load",
            str(EXAMPLES),
            "--no-bootstrap",
        ]
    )
    assert (config.port, config.tls, config.anonymous, config.history) == (6443, False, True, 50)
    assert config.service_cidrs == ("10.0.0.0/24",) and config.bootstrap is False
    assert config.port_forward == {"demo/web-1:8080": ("127.0.0.1", 18080)}
    assert config.manifests == (EXAMPLES,)


def test_bad_port_forward_option_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port-forward", "nonsense"])


def test_a_manifest_the_server_refuses_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "kubenet.testing.apiserver", "--load", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith('error: 422 Invalid: Service "Bad_Name" is invalid')
