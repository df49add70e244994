"""The real kubectl against the server, with each authentication method."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenet.testing.apiserver.pytest_fixtures import api_client
from kubenet.testing.apiserver.server import ThreadedApiServer

pytestmark = pytest.mark.kubectl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KUBECTL = next(
    (p for p in ("/usr/bin/kubectl", shutil.which("kubectl")) if p and os.access(p, os.X_OK)), None
)
if KUBECTL is None:
    pytest.skip(
        "kubectl is not installed (install Debian's kubernetes-client)", allow_module_level=True
    )

CONTEXTS = ["kubenet-token", "kubenet-cert"]


class Kubectl:
    def __init__(self, server: ThreadedApiServer, context: str, cache: Path) -> None:
        self.base = [
            str(KUBECTL),
            "--kubeconfig",
            str(server.kubeconfig),
            "--context",
            context,
            "--cache-dir",
            str(cache),
        ]

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, input=stdin, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.base, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture(params=CONTEXTS)
def kubectl(request: Any, apiserver: ThreadedApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(apiserver, request.param, tmp_path / "cache")


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.1.2], conditions: {ready: true}}]
"""


def test_get_all_kinds_across_namespaces(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=SERVICE)
    out = kubectl("get", "ns,nodes,svc,endpointslices", "-A").stdout
    assert "namespace/default" in out and "Active" in out
    assert "service/web" in out and "10.96.1.1" in out and "80/TCP" in out
    assert "endpointslice.discovery.k8s.io/web-1" in out and "10.244.1.2" in out


def test_apply_creates_then_updates_then_leaves_unchanged(kubectl: Kubectl, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    if EXAMPLES.is_dir() and any(EXAMPLES.glob("*.yaml")):
        shutil.copytree(EXAMPLES, folder)
    else:
        folder.mkdir()
        (folder / "web.yaml").write_text(SERVICE)
    created = kubectl("apply", "-f", str(folder)).stdout.splitlines()
    assert created and all(line.endswith(" created") for line in created), created
    again = kubectl("apply", "-f", str(folder)).stdout.splitlines()
    assert len(again) == len(created)
    assert any(line.endswith(" unchanged") for line in again), again
    # Change one Service in the manifests: only it is configured.
    target = next(p for p in sorted(folder.glob("*.yaml")) if "kind: Service" in p.read_text())
    docs = list(yaml.safe_load_all(target.read_text()))
    svc = next(d for d in docs if d and d["kind"] == "Service")
    svc["metadata"].setdefault("labels", {})["changed"] = "yes"
    target.write_text(yaml.safe_dump_all(docs))
    third = kubectl("apply", "-f", str(target)).stdout
    ns = svc["metadata"].get("namespace", "default")
    assert f"service/{svc['metadata']['name']} configured" in third
    labels = kubectl(
        "get", "svc", "-n", ns, svc["metadata"]["name"], "-o", "jsonpath={.metadata.labels.changed}"
    ).stdout
    assert labels == "yes"


def test_patch_merge_and_delete(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=SERVICE)
    out = kubectl(
        "patch", "svc", "web", "--type=merge", "-p", '{"spec":{"sessionAffinity":"ClientIP"}}'
    ).stdout
    assert "service/web patched" in out
    got = kubectl("get", "svc", "web", "-o", "jsonpath={.spec.sessionAffinity}").stdout
    assert got == "ClientIP"
    assert 'service "web" deleted' in kubectl("delete", "svc", "web").stdout
    missing = kubectl("get", "svc", "web", check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): services "web" not found' in missing.stderr


def test_exec_prints_hi(kubectl: Kubectl) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin="""\
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec: {containers: [{name: app, image: app:1}]}
""",
    )
    assert kubectl("exec", "shell", "--", "echo", "hi").stdout == "hi\n"
    failed = kubectl("exec", "shell", "--", "false", check=False)
    assert failed.returncode == 1 and "command terminated with exit code 1" in failed.stderr
    assert kubectl("exec", "-i", "shell", "--", "cat", stdin="piped\n").stdout == "piped\n"


def test_get_watch_receives_an_event_made_by_another_client(
    kubectl: Kubectl, apiserver: ThreadedApiServer
) -> None:
    watcher = kubectl.popen("get", "svc", "-w", "--request-timeout=20s")
    try:
        assert watcher.stdout is not None
        # The header and the listed rows come first; anything created after that can
        # only reach kubectl through its watch (which resumes from the list's version).
        header = watcher.stdout.readline()
        assert header.startswith("NAME")
        assert watcher.stdout.readline().startswith("kubernetes")
        api = api_client(apiserver)
        client.CoreV1Api(api).create_namespaced_service(
            "default",
            client.V1Service(
                metadata=client.V1ObjectMeta(name="from-python"),
                spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8443)]),
            ),
        )
        api.close()
        line = watcher.stdout.readline()
        assert line.startswith("from-python") and "8443/TCP" in line, line
    finally:
        watcher.kill()
        watcher.wait()


@pytest.fixture
def web_backend() -> Iterator[int]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello from the backend: {self.path} auth={self.headers.get('Authorization')}"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_get_raw_through_the_service_proxy(kubectl: Kubectl, web_backend: int) -> None:
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"""\
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {web_backend}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: default, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
ports: [{{name: http, port: {web_backend}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
""",
    )
    for ident in ("backend:http", "backend:80", "http:backend:http"):
        out = kubectl(
            "get", "--raw", f"/api/v1/namespaces/default/services/{ident}/proxy/x?y=1"
        ).stdout
        assert out == "hello from the backend: /x?y=1 auth=None", ident
    gone = kubectl(
        "get", "--raw", "/api/v1/namespaces/default/services/backend:9/proxy/", check=False
    )
    assert 'no service port 9 found for service \\"backend\\"' in gone.stderr or (
        'no service port 9 found for service "backend"' in gone.stderr
    ), gone.stderr


def test_viewer_and_bad_credentials(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    viewer = Kubectl(apiserver, "kubenet-viewer", tmp_path / "cache")
    assert "default" in viewer("get", "ns").stdout
    denied = viewer("delete", "ns", "kube-public", check=False)
    assert denied.returncode == 1 and "Error from server (Forbidden)" in denied.stderr
    bad = Kubectl(apiserver, "kubenet-token", tmp_path / "cache2")
    bad.base += ["--token", "not-a-token"]
    refused = bad("get", "ns", check=False)
    assert refused.returncode == 1
    assert "error: You must be logged in to the server" in refused.stderr


def test_port_forward_to_the_port_the_test_names(
    apiserver: ThreadedApiServer, tmp_path: Path, echo_backend: int
) -> None:
    kubectl = Kubectl(apiserver, "kubenet-token", tmp_path / "cache")
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"""\
apiVersion: v1
kind: Pod
metadata:
  name: pf
  namespace: default
  annotations: {{kubenet.dev/port-forward: "8080=127.0.0.1:{echo_backend}"}}
spec: {{containers: [{{name: app, image: app:1}}]}}
""",
    )
    # No kubelet runs here: mark the pod Running through the status subresource.
    kubectl(
        "patch",
        "pod",
        "pf",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Running"}}',
    )
    forward = kubectl.popen("port-forward", "pf", ":8080")
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        local = int(first.split("->")[0].rsplit(":", 1)[1])
        for text in (b"one\n", b"two\n"):  # two connections over one session
            with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
                conn.sendall(text)
                assert conn.recv(100) == text.upper()
    finally:
        forward.kill()
        forward.wait()
    missing = kubectl.popen("port-forward", "pf", ":9999")
    try:
        assert missing.stdout is not None and missing.stderr is not None
        local = int(missing.stdout.readline().split("->")[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
            conn.sendall(b"x")
            assert conn.recv(100) == b""
        assert missing.wait(10) == 1
        assert "no port-forward target configured for default/pf:9999" in missing.stderr.read()
    finally:
        missing.kill()
        missing.wait()


@pytest.fixture
def echo_backend() -> Iterator[int]:
    """A TCP server on loopback that answers with the upper-case copy of what it reads."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
