"""The proxy in front of the embedded API server over HTTPS, with every auth method,
and the real clients behind it: the ``kubernetes`` Python client and ``kubectl``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from aiohttp import web

from kubenet.forward import (
    ApiProxy,
    FilterRules,
    KubeconfigOptions,
    ProxyConfig,
    upstreams_for,
)
from kubenet.testing.apiserver.server import ServerConfig, ThreadedApiServer, running_apiserver

from .support import ThreadedProxy

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")


@pytest.fixture
def apiserver() -> Iterator[ThreadedApiServer]:
    with running_apiserver(ServerConfig(bookmark_interval=1.0)) as server:
        yield server


def proxy_for(
    options: KubeconfigOptions, config: ProxyConfig | None = None, contexts: tuple[str, ...] = ()
) -> ThreadedProxy:
    def make() -> ApiProxy:
        return ApiProxy(config or ProxyConfig(), upstreams_for(options, contexts))

    return ThreadedProxy(make)


def get(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    resp = urllib3.request(method, url, body=data, headers=headers, timeout=10)
    try:
        return resp.status, json.loads(resp.data)
    except ValueError:
        return resp.status, resp.data.decode()


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def write_kubeconfig(server: ThreadedApiServer, path: Path, user: dict[str, Any]) -> Path:
    """The server's own kubeconfig with one more context, "custom", for ``user``."""
    config = yaml.safe_load(server.kubeconfig.read_text())
    config["users"].append({"name": "custom", "user": user})
    config["contexts"].append(
        {"name": "custom", "context": {"cluster": "kubenet", "user": "custom"}}
    )
    config["current-context"] = "custom"
    path.write_text(yaml.safe_dump(config))
    return path


# --- each auth method ------------------------------------------------------------------


@pytest.mark.parametrize("context", ["kubenet-token", "kubenet-cert"])
def test_token_and_client_certificate(apiserver: ThreadedApiServer, context: str) -> None:
    options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig), context=context)
    with proxy_for(options) as proxy:
        status, body = get(f"{proxy.url}/api/v1/namespaces")
        assert status == 200, body
        assert {n["metadata"]["name"] for n in body["items"]} >= {"default", "kube-system"}
        status, body = get(f"{proxy.url}/api/v1/namespaces/default/configmaps", "POST",
                           configmap(f"made-with-{context}"))  # fmt: skip
        assert status == 201, body


def test_token_file_rotation(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(apiserver.server.viewer_token)
    kubeconfig = write_kubeconfig(apiserver, tmp_path / "config", {"tokenFile": str(token_file)})
    with proxy_for(KubeconfigOptions(kubeconfig=str(kubeconfig))) as proxy:
        url = f"{proxy.url}/api/v1/namespaces/default/configmaps"
        status, body = get(url, "POST", configmap("a"))
        assert status == 403
        assert 'User "kubenet-viewer" cannot create' in body["message"]
        assert get(url)[0] == 200  # the viewer may read
        token_file.write_text(apiserver.admin_token)
        status, body = get(url, "POST", configmap("a"))
        assert status == 201, body


def test_exec_credential_plugin(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    runs = tmp_path / "runs"
    script.write_text(
        "import json, sys\n"
        f"open({str(runs)!r}, 'a').write('x')\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', "
        f"'status': {{'token': {apiserver.admin_token!r}}}}}))\n"
    )
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}  # fmt: skip
    kubeconfig = write_kubeconfig(apiserver, tmp_path / "config", user)
    with proxy_for(KubeconfigOptions(kubeconfig=str(kubeconfig))) as proxy:
        for name in ("one", "two"):
            status, body = get(
                f"{proxy.url}/api/v1/namespaces/default/configmaps", "POST", configmap(name)
            )
            assert status == 201, body
    assert runs.read_text() == "x"


def test_impersonation(apiserver: ThreadedApiServer) -> None:
    url_path = "/api/v1/namespaces/default/configmaps"
    plain = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig), impersonate="jane")
    with proxy_for(plain) as proxy:
        status, body = get(f"{proxy.url}{url_path}", "POST", configmap("x"))
        assert status == 403 and 'User "jane"' in body["message"]
        assert get(f"{proxy.url}{url_path}")[0] == 403  # jane alone may not even read
    viewer = KubeconfigOptions(
        kubeconfig=str(apiserver.kubeconfig),
        impersonate="jane",
        impersonate_groups=("kubenet:viewers",),
        impersonate_uid="42",
    )
    with proxy_for(viewer) as proxy:
        assert get(f"{proxy.url}{url_path}")[0] == 200  # the group came along
        status, body = get(f"{proxy.url}{url_path}", "POST", configmap("x"))
        assert status == 403 and 'User "jane"' in body["message"]


def test_two_contexts_at_once(apiserver: ThreadedApiServer) -> None:
    options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig))
    config = ProxyConfig(multi_cluster=True)
    with proxy_for(options, config, ("kubenet-token", "kubenet-viewer")) as proxy:
        admin = f"{proxy.url}/clusters/kubenet-token/api/v1/namespaces/default/configmaps"
        viewer = f"{proxy.url}/clusters/kubenet-viewer/api/v1/namespaces/default/configmaps"
        assert get(admin, "POST", configmap("by-admin"))[0] == 201
        status, body = get(viewer, "POST", configmap("by-viewer"))
        assert status == 403 and "kubenet-viewer" in body["message"]
        status, body = get(viewer)
        assert status == 200
        assert [c["metadata"]["name"] for c in body["items"]] == ["by-admin"]


# --- the kubernetes Python client -----------------------------------------------------------


def test_python_client_list_and_watch(apiserver: ThreadedApiServer) -> None:
    import kubernetes

    # The client's watch module has no annotations.
    client: Any = kubernetes.client
    watch: Any = kubernetes.watch
    options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig))
    with proxy_for(options) as proxy:
        configuration = client.Configuration()
        configuration.host = proxy.url
        api = client.CoreV1Api(client.ApiClient(configuration))
        listed = api.list_namespaced_config_map("default")
        assert listed.items == []
        version = listed.metadata.resource_version

        def create_later() -> None:
            time.sleep(0.3)
            api.create_namespaced_config_map("default", configmap("watched"))

        threading.Thread(target=create_later, daemon=True).start()
        w = watch.Watch()
        events = []
        for event in w.stream(
            api.list_namespaced_config_map, "default", resource_version=version, timeout_seconds=5
        ):
            events.append((event["type"], event["object"].metadata.name))
            w.stop()
        assert events == [("ADDED", "watched")]
        api.api_client.close()


# --- kubectl ------------------------------------------------------------------------------


def kubectl(proxy: ThreadedProxy, home: Path, *args: str, timeout: float = 20) -> str:
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "none")}
    done = subprocess.run(
        [str(KUBECTL), "--server", proxy.url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_kubectl
def test_kubectl_get_watch_apply_delete(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig))
    with proxy_for(options) as proxy:
        assert "kube-system" in kubectl(proxy, tmp_path, "get", "namespaces", "-o", "name")
        manifest = tmp_path / "cm.yaml"
        manifest.write_text(yaml.safe_dump(configmap("applied")))
        assert "configmap/applied created" in kubectl(proxy, tmp_path, "apply", "-f", str(manifest))
        manifest.write_text(yaml.safe_dump({**configmap("applied"), "data": {"k": "changed"}}))
        assert "configmap/applied configured" in kubectl(
            proxy, tmp_path, "apply", "-f", str(manifest)
        )
        out = kubectl(proxy, tmp_path, "get", "configmap", "applied", "-o", "jsonpath={.data.k}")
        assert out == "changed"

        env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
        watcher = subprocess.Popen(
            [str(KUBECTL), "--server", proxy.url, "get", "configmaps", "-w", "-o", "name"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert watcher.stdout is not None
            first = watcher.stdout.readline()  # the existing object
            assert "configmap/applied" in first
            # (kubectl create would send protobuf, which the embedded server does not read.)
            status, _ = get(
                f"{proxy.url}/api/v1/namespaces/default/configmaps", "POST",
                configmap("during-watch"),
            )  # fmt: skip
            assert status == 201
            line = watcher.stdout.readline()
            assert line.strip() == "configmap/during-watch"
        finally:
            watcher.kill()
            watcher.wait()
        out = kubectl(proxy, tmp_path, "delete", "configmap", "applied")
        assert 'configmap "applied" deleted' in out


@needs_kubectl
def test_kubectl_exec_through_the_proxy(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    apiserver.load(
        [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box", "namespace": "default"},
          "spec": {"containers": [{"name": "main", "image": "busybox"}]},
          "status": {"phase": "Running"}}]
    )  # fmt: skip
    options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig))
    # kubectl proxy's default rules refuse exec: allow it, as a user would have to.
    allow_exec = ProxyConfig(rules=FilterRules.from_flags(reject_paths=""))
    with proxy_for(options, allow_exec) as proxy:
        assert kubectl(proxy, tmp_path, "exec", "box", "--", "echo", "hi") == "hi\n"
    with proxy_for(options) as proxy:
        env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
        refused = subprocess.run(
            [str(KUBECTL), "--server", proxy.url, "exec", "box", "--", "echo", "hi"],
            capture_output=True, text=True, env=env, timeout=20,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "hi" not in refused.stdout


@needs_kubectl
def test_kubectl_get_raw_service_proxy(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from backend at {request.path}\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner_box: dict[str, Any] = {}
    ready = threading.Event()

    def serve_backend() -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        runner_box["port"] = runner.addresses[0][1]
        runner_box["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve_backend, daemon=True)
    thread.start()
    ready.wait(5)
    port = runner_box["port"]
    try:
        apiserver.load(
            [{"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": "web", "namespace": "default"},
              "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}},
             {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "web-1", "namespace": "default",
                           "labels": {"kubernetes.io/service-name": "web"}},
              "addressType": "IPv4",
              "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
              "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}]
        )  # fmt: skip
        options = KubeconfigOptions(kubeconfig=str(apiserver.kubeconfig))
        with proxy_for(options) as proxy:
            out = kubectl(
                proxy,
                tmp_path,
                "get",
                "--raw",
                "/api/v1/namespaces/default/services/web:http/proxy/greet",
            )
            assert out == "hello from backend at /greet\n"
    finally:
        runner_box["loop"].call_soon_threadsafe(runner_box["loop"].stop)
        thread.join(5)
